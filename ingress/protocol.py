"""Errors shared by the wire-format serializers of every channel."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


class ProtocolError(ValueError):
    """A message the stream cannot go on after: close the socket with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, metric_reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.metric_reason = metric_reason


def json_object(text: str | bytes) -> dict[str, Any]:
    """A websocket text message as a JSON object, or the ProtocolError every channel closes with."""
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(1007, f"invalid JSON: {getattr(exc, 'msg', exc)}", "invalid_json") from exc
    if not isinstance(msg, dict):
        raise ProtocolError(1007, "message is not a JSON object", "invalid_json")
    return msg


def base64_payload(data: Any, what: str) -> bytes:
    """Decode a base64 audio payload, or raise the ProtocolError every channel closes with."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ProtocolError(1007, f"{what} is not valid base64", "bad_base64") from exc


class UnknownMessage(ValueError):
    """A well-formed message of a kind we do not know: counted and ignored (forward compatibility)."""
