"""Errors and field checks shared by the wire-format serializers of every channel.

Every inbound message comes from a stranger until proven otherwise, so the
serializers read fields only through the checks below, and ``catch_all`` turns
anything they missed into a ProtocolError (close 1007) instead of a traceback.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

CLOSE_REASON_MAX_BYTES = 123  # RFC 6455 §5.5: control frame payload ≤ 125 bytes, 2 of them the code
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:+@=/-]{1,128}$")  # SIDs, GUIDs, raw IDs like "4:+1555"
DTMF_DIGITS = frozenset("0123456789*#ABCD")
INTEGER_TEXT = re.compile(r"-?[0-9]{1,18}")  # compiled once: every Twilio media message has two such fields


class ProtocolError(ValueError):
    """A message the stream cannot go on after: close the socket with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, metric_reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.metric_reason = metric_reason


class UnknownMessage(ValueError):
    """A well-formed message of a kind we do not know: counted and ignored (forward compatibility)."""


def close_reason(reason: str) -> str:
    """``reason`` cut to the 123 bytes a close frame can carry, never in the middle of a UTF-8 character."""
    return reason.encode("utf-8", "replace")[:CLOSE_REASON_MAX_BYTES].decode("utf-8", "ignore")


def shown(value: Any, limit: int = 40) -> str:
    """A caller-supplied value as it may appear in a reason or a log line: repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def malformed(reason: str) -> ProtocolError:
    return ProtocolError(1007, reason, "malformed")


def json_object(text: str | bytes) -> dict[str, Any]:
    """A websocket text message as a JSON object, or the ProtocolError every channel closes with."""
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(1007, f"invalid JSON: {getattr(exc, 'msg', exc)}", "invalid_json") from exc
    except RecursionError as exc:
        raise ProtocolError(1007, "invalid JSON: nested too deeply", "invalid_json") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ProtocolError(1007, "invalid JSON: number out of range", "invalid_json") from exc
    if not isinstance(msg, dict):
        raise ProtocolError(1007, "message is not a JSON object", "invalid_json")
    return msg


def base64_payload(data: Any, what: str) -> bytes:
    """Decode a base64 audio payload, or raise the ProtocolError every channel closes with."""
    if not isinstance(data, str | bytes):
        raise ProtocolError(1007, f"{what} is not a base64 string", "bad_base64")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ProtocolError(1007, f"{what} is not valid base64", "bad_base64") from exc


def obj(value: Any, what: str) -> dict[str, Any]:
    """A nested JSON object (absent: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed(f"{what} is not an object")
    return value


def text(value: Any, what: str, default: str = "", max_len: int = 256) -> str:
    """A string field; numbers are accepted as their decimal text (Twilio sends some numbers as strings)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise malformed(f"{what} is not a string")
    out = value if isinstance(value, str) else str(value)
    if len(out) > max_len:
        raise malformed(f"{what} is longer than {max_len} characters")
    return out


def identifier(value: Any, what: str) -> str:
    """An ID that becomes a record key and a log field: short, and free of spaces and control characters."""
    out = text(value, what, max_len=128)
    if out and not ID_PATTERN.match(out):
        raise malformed(f"{what} {shown(out)} is not a valid identifier")
    return out


def integer(value: Any, what: str, default: int, lo: int = 0, hi: int = 2**53) -> int:
    """An integer field, as a JSON number or a string of digits, within [lo, hi]."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise malformed(f"{what} is not an integer")
    if isinstance(value, str):
        if not INTEGER_TEXT.fullmatch(value):
            raise malformed(f"{what} {shown(value)} is not an integer")
        out = int(value)
    elif isinstance(value, int):
        out = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        out = int(value)
    else:
        raise malformed(f"{what} {shown(value)} is not an integer")
    if not lo <= out <= hi:
        raise malformed(f"{what} {shown(out)} is out of range")
    return out


def flag(value: Any, what: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise malformed(f"{what} is not a boolean")
    return value


E = TypeVar("E")


def catch_all(parse: Callable[[str | bytes], E]) -> Callable[[str | bytes], E]:
    """Whatever a parser did not foresee becomes close 1007 ``malformed``, never an unhandled exception."""

    @functools.wraps(parse)
    def guarded(message: str | bytes) -> E:
        try:
            return parse(message)
        except (ProtocolError, UnknownMessage):
            raise
        except Exception as exc:  # the parser's own bug: the caller still gets a clear answer
            raise malformed(f"malformed message ({type(exc).__name__})") from exc

    return guarded
