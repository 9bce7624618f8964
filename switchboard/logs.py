"""Structured JSON logs carrying the correlation IDs of the record being handled."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from switchboard.redact import mask_log_field, mask_phones

CORRELATION_KEYS = ("call_id", "session_id", "agent_id", "turn_id", "traceparent")
# A caller can put 64 KB into a field we log; a line stays readable and a flood of them stays small.
FIELD_MAX_CHARS = 2048
TRACEBACK_MAX_CHARS = 8192
# Warnings and errors with the same message template: this many per window, then one summary.
REPEAT_BURST = 10
REPEAT_WINDOW_S = 10.0
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("switchboard_log_context")


@contextmanager
def correlation(**ids: str | None) -> Iterator[None]:
    """Attach correlation IDs to every log line in this (async) context."""
    token = _context.set({**_context.get({}), **{k: v for k, v in ids.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**ids: str | None) -> None:
    """Attach correlation IDs for the rest of this task (e.g. a socket's handler)."""
    _context.set({**_context.get({}), **{k: v for k, v in ids.items() if v}})


def capped(value: Any, limit: int = FIELD_MAX_CHARS) -> Any:
    """A log field cut to ``limit`` characters (numbers, booleans and None pass as they are)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}…[{len(text) - limit} more chars]"


class RepeatFilter(logging.Filter):
    """Lets through at most ``burst`` warnings/errors of one message template per ``window_s``.

    The first record after a window that dropped some carries ``suppressed`` (how many), so
    nothing vanishes silently; INFO and below are never dropped (they are not caller-driven floods).
    """

    MAX_KEYS = 1000

    def __init__(self, burst: int = REPEAT_BURST, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key → [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = time.monotonic()
        state = self._seen.get(key)
        if state is None or now - state[0] >= self.window_s:
            dropped = int(state[2]) if state else 0
            if len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()  # templates are few; many keys mean formatted messages, forget them
            self._seen[key] = [now, 1, 0]
            if dropped:
                fields = dict(getattr(record, "fields", None) or {})
                record.fields = {**fields, "suppressed": dropped}
            return True
        state[1] += 1
        if state[1] <= self.burst:
            return True
        state[2] += 1
        return False


# "GET /acs/media?caller_number=%2B1555…" → "GET /acs/media": query strings carry caller numbers and
# tokens (uvicorn logs every websocket handshake with its query), and nothing that reads logs needs them.
_QUERY_STRING = re.compile(r"((?:https?|wss?)://[^\s\"'?]+|(?<![\w/])/[^\s\"'?]*)\?[^\s\"']*")


def scrub(text: str) -> str:
    """A log text without query strings and with phone numbers masked."""
    if "?" in text:
        text = _QUERY_STRING.sub(r"\1", text)
    return mask_phones(text)


def _scrub_field(name: str, value: Any) -> Any:
    value = mask_log_field(name, value)
    return scrub(value) if isinstance(value, str) else value


class PiiFilter(logging.Filter):
    """Keeps caller numbers and query strings out of every log line, whichever library wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: _scrub_field(k, v) for k, v in fields.items()}
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self.instance = f"{socket.gethostname()}:{os.getpid()}"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "instance": self.instance,
            "logger": record.name,
            "msg": capped(record.getMessage()),
        }
        entry.update({k: capped(v, 256) for k, v in _context.get({}).items()})
        extra = getattr(record, "fields", None)
        if extra:
            entry.update({k: capped(v) for k, v in extra.items()})
        if record.exc_info:
            entry["exc"] = capped(self.formatException(record.exc_info), TRACEBACK_MAX_CHARS)
        return json.dumps(entry, default=str)


class HandshakeFilter(logging.Filter):
    """Drops uvicorn's INFO lines for every websocket handshake ("connection open", "[accepted]", "connection
    closed"): three lines per connection, the bulk of a flood's logs, saying nothing the call logs do not."""

    CHATTER = ("connection open", "connection closed")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "uvicorn.error" or record.levelno != logging.INFO:
            return True
        msg = record.getMessage()
        return not (msg in self.CHATTER or ('"WebSocket /' in msg and msg.endswith(("[accepted]", "403"))))


def setup(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(PiiFilter())
    handler.addFilter(RepeatFilter())
    handler.addFilter(HandshakeFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})
