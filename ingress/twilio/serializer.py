"""Twilio Media Streams wire format ⇄ typed events. Pure: no I/O, no sockets.

Inbound: connected, start, media, dtmf, mark, stop. Outbound: media, mark, clear.
https://www.twilio.com/docs/voice/media-streams/websocket-messages
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from ingress import protocol as p
from ingress.protocol import ProtocolError, UnknownMessage

MULAW_RATE = 8000
MAX_PARAMETERS = 32  # TwiML <Parameter>s of one stream
MAX_PARAMETER_CHARS = 1024  # room for a signed token


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


def _body(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(1007, f"'{key}' message without a '{key}' object", "malformed")
    return value


def _parameters(value: Any) -> dict[str, str]:
    """``customParameters``: the <Parameter>s of the TwiML, a flat object of short strings."""
    params = p.obj(value, "start.customParameters")
    if len(params) > MAX_PARAMETERS:
        raise p.malformed(f"start.customParameters has more than {MAX_PARAMETERS} entries")
    return {p.text(k, "a customParameters name", max_len=64): p.text(v, f"customParameters.{p.shown(k, 20)}",
                                                                          max_len=MAX_PARAMETER_CHARS)
            for k, v in params.items()}


@p.catch_all
def parse(text: str | bytes) -> TwilioEvent:
    """One websocket text message → a typed event. Raises ProtocolError / UnknownMessage."""
    msg = p.json_object(text)
    event = msg.get("event")
    sid = p.identifier(msg.get("streamSid"), "streamSid")
    if event == "media":
        media = _body(msg, "media")
        payload = p.base64_payload(media.get("payload", ""), "media payload")
        return Media(sid, payload, p.integer(media.get("chunk"), "media.chunk", 0),
                     p.integer(media.get("timestamp"), "media.timestamp", 0))
    if event == "start":
        start = _body(msg, "start")
        fmt = p.obj(start.get("mediaFormat"), "start.mediaFormat")
        call_sid = p.identifier(start.get("callSid"), "start.callSid")
        if not call_sid:
            raise ProtocolError(1007, "start message without callSid", "malformed")
        return Start(
            stream_sid=p.identifier(start.get("streamSid"), "start.streamSid") or sid,
            call_sid=call_sid,
            account_sid=p.identifier(start.get("accountSid"), "start.accountSid"),
            encoding=p.text(fmt.get("encoding"), "mediaFormat.encoding", "audio/x-mulaw", max_len=64),
            sample_rate=p.integer(fmt.get("sampleRate"), "mediaFormat.sampleRate", MULAW_RATE, 1, 1_000_000),
            custom_parameters=_parameters(start.get("customParameters")),
        )
    if event == "connected":
        return Connected(p.text(msg.get("protocol"), "protocol", max_len=64))
    if event == "dtmf":
        return Dtmf(sid, p.text(_body(msg, "dtmf").get("digit"), "dtmf.digit", max_len=16))
    if event == "mark":
        return Mark(sid, p.text(_body(msg, "mark").get("name"), "mark.name", max_len=256))
    if event == "stop":
        return Stop(sid)
    raise UnknownMessage(f"unknown event {p.shown(event)}")


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
