"""ACS bidirectional media streaming wire format ⇄ typed events. Pure: no I/O, no sockets.

Inbound: ``AudioMetadata`` (once, first), ``AudioData`` (base64 PCM16 mono at the
metadata's rate, ``silent`` flag), ``DtmfData``. Outbound: ``AudioData`` and
``StopAudio``. ACS SDKs serialise with camelCase or PascalCase keys, so inbound
keys are matched case-insensitively; outbound messages use camelCase.
https://learn.microsoft.com/azure/communication-services/how-tos/call-automation/audio-streaming-quickstart
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from ingress import protocol as p
from ingress.protocol import ProtocolError

SAMPLE_RATES = (16_000, 24_000)
BYTES_PER_SAMPLE = 2


@dataclass(frozen=True, slots=True)
class AudioMetadata:
    subscription_id: str
    encoding: str
    sample_rate: int
    channels: int
    length: int  # bytes of one AudioData packet (640 = 20 ms at 16 kHz), as announced: never trusted for sizes

    @property
    def frame_samples(self) -> int:
        """Samples of one 20 ms packet: what a silent packet without data stands for."""
        return self.sample_rate // 50


@dataclass(frozen=True, slots=True)
class AudioData:
    pcm: bytes  # PCM16 little-endian mono at the metadata's rate; empty when silent without data
    silent: bool
    timestamp: str
    participant_raw_id: str


@dataclass(frozen=True, slots=True)
class DtmfData:
    digits: str
    participant_raw_id: str


AcsEvent = AudioMetadata | AudioData | DtmfData


def _lower_keys(value: Any) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else {}


def _body(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    body = msg.get(kind.lower())
    if not isinstance(body, dict):
        raise ProtocolError(1007, f"'{kind}' message without an '{kind[0].lower() + kind[1:]}' object", "malformed")
    return _lower_keys(body)


@p.catch_all
def parse(text: str | bytes) -> AcsEvent:
    """One websocket message → a typed event. Raises ProtocolError on anything the stream cannot go on after."""
    msg = _lower_keys(p.json_object(text))
    kind = msg.get("kind")
    if kind == "AudioData":
        body = _body(msg, "AudioData")
        silent = p.flag(body.get("silent"), "AudioData silent")
        data = body.get("data") or ""
        if not isinstance(data, str):
            raise ProtocolError(1007, "AudioData data is not a base64 string", "bad_base64")
        pcm = p.base64_payload(data, "AudioData data")
        if len(pcm) % BYTES_PER_SAMPLE:
            raise ProtocolError(1007, f"AudioData of {len(pcm)} bytes is not whole PCM16 samples", "bad_audio")
        return AudioData(pcm, silent, p.text(body.get("timestamp"), "AudioData timestamp", max_len=64),
                         p.identifier(body.get("participantrawid"), "AudioData participantRawID"))
    if kind == "AudioMetadata":
        body = _body(msg, "AudioMetadata")
        meta = AudioMetadata(
            subscription_id=p.identifier(body.get("subscriptionid"), "AudioMetadata subscriptionId"),
            encoding=p.text(body.get("encoding"), "AudioMetadata encoding", "PCM", max_len=32),
            sample_rate=p.integer(body.get("samplerate"), "AudioMetadata sampleRate", 16_000, 1, 1_000_000),
            channels=p.integer(body.get("channels"), "AudioMetadata channels", 1, 0, 64),
            length=p.integer(body.get("length"), "AudioMetadata length", 640, 0, 2**31),
        )
        check_format(meta)
        return meta
    if kind == "DtmfData":
        body = _body(msg, "DtmfData")
        return DtmfData(p.text(body.get("data"), "DtmfData data", max_len=64),
                        p.identifier(body.get("participantrawid"), "DtmfData participantRawID"))
    raise ProtocolError(1003, f"unknown message kind {p.shown(kind)}: expected AudioMetadata, AudioData or DtmfData",
                        "unknown_kind")


def check_format(meta: AudioMetadata) -> None:
    if meta.encoding.upper() != "PCM":
        raise ProtocolError(1003, f"unsupported encoding {meta.encoding!r}: only PCM", "bad_format")
    if meta.sample_rate not in SAMPLE_RATES:
        raise ProtocolError(1003, f"unsupported sample rate {meta.sample_rate}: expected 16000 or 24000",
                            "bad_sample_rate")
    if meta.channels != 1:
        raise ProtocolError(1003, f"unsupported channel count {meta.channels}: only mono", "bad_format")


def audio_data(pcm: bytes) -> str:
    """Agent audio to play into the call: PCM16 mono at the call's rate."""
    return json.dumps({"kind": "AudioData", "audioData": {"data": base64.b64encode(pcm).decode()}, "stopAudio": None})


def stop_audio() -> str:
    """Barge-in: ACS drops the agent audio it has buffered."""
    return json.dumps({"kind": "StopAudio", "audioData": None, "stopAudio": {}})


def metadata_message(subscription_id: str, sample_rate: int = 16_000, length: int | None = None) -> str:
    """The first message ACS sends (used by simulated callers and tests)."""
    body = {"subscriptionId": subscription_id, "encoding": "PCM", "sampleRate": sample_rate, "channels": 1,
            "length": length if length is not None else sample_rate // 50 * BYTES_PER_SAMPLE}
    return json.dumps({"kind": "AudioMetadata", "audioMetadata": body})


def audio_message(pcm: bytes, timestamp: str, participant_raw_id: str, silent: bool = False) -> str:
    """An inbound AudioData message as ACS sends it (used by simulated callers and tests)."""
    body = {"timestamp": timestamp, "participantRawID": participant_raw_id,
            "data": base64.b64encode(pcm).decode(), "silent": silent}
    return json.dumps({"kind": "AudioData", "audioData": body})
