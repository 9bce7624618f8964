"""Validation against the JSON API's published websocket schema (ingress/jsonapi/websocket.schema.json)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from ingress.jsonapi.routes import WEBSOCKET_SCHEMA

_SCHEMA = json.loads(WEBSOCKET_SCHEMA.read_text())


def _validator(definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$defs": _SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"})


_CLIENT, _SERVER = _validator("client_message"), _validator("server_message")


def validate_client(message: Any) -> None:
    _CLIENT.validate(message)


def validate_server(message: Any) -> None:
    _SERVER.validate(message)
