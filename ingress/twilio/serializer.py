"""Twilio Media Streams wire format ⇄ typed events. Pure: no I/O, no sockets.

Inbound: connected, start, media, dtmf, mark, stop. Outbound: media, mark, clear.
https://www.twilio.com/docs/voice/media-streams/websocket-messages
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from ingress.protocol import ProtocolError, UnknownMessage, base64_payload, json_object

MULAW_RATE = 8000


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    encoding: str
    sample_rate: int
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    stream_sid: str
    payload: bytes  # μ-law 8 kHz
    chunk: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    stream_sid: str


TwilioEvent = Connected | Start | Media | Dtmf | Mark | Stop


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(1007, f"'{msg.get('event')}' message without a '{key}' object", "malformed")
    return value


def parse(text: str | bytes) -> TwilioEvent:
    """One websocket text message → a typed event. Raises ProtocolError / UnknownMessage."""
    msg = json_object(text)
    event = msg.get("event")
    sid = str(msg.get("streamSid", ""))
    if event == "media":
        media = _obj(msg, "media")
        payload = base64_payload(media.get("payload", ""), "media payload")
        return Media(sid, payload, int(media.get("chunk", 0) or 0), int(media.get("timestamp", 0) or 0))
    if event == "start":
        start = _obj(msg, "start")
        fmt = start.get("mediaFormat") or {}
        call_sid = start.get("callSid")
        if not call_sid:
            raise ProtocolError(1007, "start message without callSid", "malformed")
        return Start(
            stream_sid=str(start.get("streamSid") or sid),
            call_sid=str(call_sid),
            account_sid=str(start.get("accountSid", "")),
            encoding=str(fmt.get("encoding", "audio/x-mulaw")),
            sample_rate=int(fmt.get("sampleRate", MULAW_RATE)),
            custom_parameters={str(k): str(v) for k, v in (start.get("customParameters") or {}).items()},
        )
    if event == "connected":
        return Connected(str(msg.get("protocol", "")))
    if event == "dtmf":
        return Dtmf(sid, str(_obj(msg, "dtmf").get("digit", "")))
    if event == "mark":
        return Mark(sid, str(_obj(msg, "mark").get("name", "")))
    if event == "stop":
        return Stop(sid)
    raise UnknownMessage(f"unknown event {event!r}")


def media(stream_sid: str, mulaw: bytes) -> str:
    return json.dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"payload": base64.b64encode(mulaw).decode()}}
    )


def mark(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


def twiml_connect_stream(stream_url: str, parameters: dict[str, str] | None = None) -> str:
    """TwiML answering a call with a bidirectional media stream to ``stream_url``."""
    from xml.sax.saxutils import quoteattr

    params = "".join(f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in (parameters or {}).items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{params}</Stream></Connect></Response>"
    )
