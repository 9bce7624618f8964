"""Records of a call, as the agent processor receives them."""

from __future__ import annotations

from typing import Any

from switchboard.bus import Correlation
from switchboard.records import CallEvent, CallEventKind, Timings, Transcript, TranscriptKind, TurnEvent, TurnEventKind
from switchboard.runner import Incoming, Out
from switchboard.topics import CALLS, TRANSCRIPTS, TURNS


def started(call_id: str, **attributes: str) -> Incoming:
    event = CallEvent(call_id, f"s-{call_id}", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US", "node-a", 3,
                      attributes=dict(attributes))
    return Incoming(event, Correlation(call_id=call_id), CALLS, 0, 0, 0)


def said(call_id: str, turn: int, text: str) -> Incoming:
    t = Transcript(call_id, turn, TranscriptKind.FINAL, text, "en-US", 1200, "whisper", 2,
                   timings=Timings(speech_end_us=1, turn_detected_us=2))
    return Incoming(t, Correlation(call_id=call_id), TRANSCRIPTS, 0, turn, 0)


def barge_in(call_id: str, turn: int) -> Incoming:
    e = TurnEvent(call_id, turn + 1, TurnEventKind.BARGE_IN, 3, 3, cancelled_turn_seq=turn)
    return Incoming(e, Correlation(call_id=call_id), TURNS, 0, 100 + turn, 0)


async def run(proc: Any, msg: Incoming) -> list[Any]:
    """Every record the processor yields for one input."""
    return [o.record async for o in proc.handle(msg)]


def of(records: list[Any], kind: type) -> list[Any]:
    return [r for r in records if isinstance(r, kind)]


__all__ = ["Out", "barge_in", "of", "run", "said", "started"]
