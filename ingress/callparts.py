"""What a call session (``ingress/calls.py``) is built from: the call's identity, the limits on what
it may publish, the outbound half of its channel's wire format, and the chunks its playback queue holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from switchboard.audio import BUS_RATE
from switchboard.records import CallEvent, CallEventKind, Timings, now_us

FRAME_MS = 20
FRAME_SAMPLES = BUS_RATE * FRAME_MS // 1000


class CallerSocket(Protocol):
    """The outbound half of a channel's wire format."""

    async def send_audio(self, frame: np.ndarray) -> None:
        """One 20 ms frame of bus-rate PCM16 samples."""

    async def send_mark(self, name: str) -> None: ...

    async def send_clear(self) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class HungUp:
    """The socket of a call that has ended: sends nothing (and holds no connection)."""

    async def send_audio(self, frame: np.ndarray) -> None:
        pass

    async def send_mark(self, name: str) -> None:
        pass

    async def send_clear(self) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class CallLimits:
    """What one call may make this node publish (see IngressSettings and README "Bad input")."""

    audio_speed: float = 1.5  # × real time
    audio_burst_s: float = 5.0
    dtmf_digits: int = 4  # per message
    dtmf_per_s: float = 10.0
    record_ms: int = FRAME_MS  # caller audio per audio.in record, a multiple of FRAME_MS


@dataclass(slots=True)
class CallInfo:
    call_id: str
    session_id: str
    channel: str
    agent_id: str
    language: str
    caller_number: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    def event(
        self, kind: CallEventKind, node: str, reply_partition: int, turn_seq: int | None = None,
        reason: str | None = None,
    ) -> CallEvent:
        """A ``calls`` record of this call, as the ingress node that holds its socket writes it."""
        return CallEvent(
            call_id=self.call_id,
            session_id=self.session_id,
            kind=kind,
            ts_us=now_us(),
            channel=self.channel,
            agent_id=self.agent_id,
            language=self.language,
            ingress_node=node,
            reply_partition=reply_partition,
            caller_number=self.caller_number,
            turn_seq=turn_seq,
            reason=reason,
            attributes=self.attributes,
        )


@dataclass(slots=True)
class Chunk:
    """Agent audio in the playback queue: part of a reply (or the filler), with what its end means."""

    turn_seq: int
    samples: np.ndarray
    end: bool = False
    end_call: bool = False
    timings: Timings | None = None
    filler: bool = False
    trace: tuple[str, int] | None = None  # tracing on: the record's traceparent and its arrival here (ns)
    seq: int = 0  # the AudioOut seq of its first sample: sentence × SEQ_STRIDE + i (ingress/heard.py)
