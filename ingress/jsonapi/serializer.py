"""JSON API websocket wire format ⇄ typed events. Pure: no I/O, no sockets.

Client → server (one JSON object per text message, field ``type``):

- ``{"type": "audio_chunk", "data": <base64 PCM16 LE mono>, "timestamp": <number, optional>,
  "sample_rate": <int, optional: must equal the session's>}``
- ``{"type": "end_speech"}``: the caller stopped talking; the turn is closed now.
- ``{"type": "hangup"}``: end the call (closing the socket does too).

Server → client: ``session_started``, ``transcript``, ``agent_response``,
``agent_audio``, ``clear``, ``reply_end``, ``latency`` (see the builders
below and docs/channels.md).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from ingress import protocol as p
from ingress.protocol import ProtocolError

SAMPLE_RATES = (8_000, 16_000, 24_000, 44_100, 48_000)
BYTES_PER_SAMPLE = 2


@dataclass(frozen=True, slots=True)
class AudioChunk:
    pcm: bytes  # PCM16 little-endian mono at the session's rate
    timestamp: float | None
    sample_rate: int | None


@dataclass(frozen=True, slots=True)
class EndSpeech:
    pass


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


ClientMessage = AudioChunk | EndSpeech | Hangup


@p.catch_all
def parse(text: str | bytes) -> ClientMessage:
    """One websocket message → a typed event. Raises ProtocolError (close code + reason)."""
    msg = p.json_object(text)
    kind = msg.get("type")
    if kind == "audio_chunk":
        data = msg.get("data")
        if not isinstance(data, str):
            raise ProtocolError(1007, "audio_chunk without a base64 'data' string", "malformed")
        pcm = p.base64_payload(data, "audio_chunk data")
        if len(pcm) % BYTES_PER_SAMPLE:
            raise ProtocolError(1007, f"audio_chunk of {len(pcm)} bytes is not whole PCM16 samples", "bad_audio")
        rate = msg.get("sample_rate")
        if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool)):
            raise ProtocolError(1007, "audio_chunk sample_rate is not an integer", "malformed")
        ts = msg.get("timestamp")
        # a timestamp is informational: anything but a finite number is dropped, not fatal
        finite = isinstance(ts, int | float) and not isinstance(ts, bool) and abs(ts) < 1e15
        return AudioChunk(pcm, float(ts) if finite else None, rate)
    if kind == "end_speech":
        return EndSpeech()
    if kind == "hangup":
        return Hangup()
    raise ProtocolError(1003, f"unknown message type {p.shown(kind)}: expected audio_chunk, end_speech or hangup",
                        "unknown_type")


def _dump(kind: str, **body: Any) -> str:
    return json.dumps({"type": kind, **body})


def session_started(session_id: str, call_id: str, sample_rate: int) -> str:
    return _dump("session_started", session_id=session_id, call_id=call_id, sample_rate=sample_rate)


def transcript(turn: int, text: str, final: bool, ts_us: int) -> str:
    return _dump("transcript", turn=turn, text=text, final=final, timestamp=ts_us / 1e6)


def agent_response(turn: int, seq: int, text: str, ts_us: int) -> str:
    return _dump("agent_response", turn=turn, seq=seq, text=text, timestamp=ts_us / 1e6)


def agent_audio(pcm: bytes, sample_rate: int, timestamp: float) -> str:
    return _dump("agent_audio", data=base64.b64encode(pcm).decode(), sample_rate=sample_rate, timestamp=timestamp)


def clear() -> str:
    return _dump("clear")


def reply_end(name: str) -> str:
    return _dump("reply_end", name=name)


def latency(turn: int, fields: dict[str, float | None]) -> str:
    return _dump("latency", turn=turn, **fields)
