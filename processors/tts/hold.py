"""Speculative audio, held per call until the agent confirms the turn or throws the reply away.

The agent answers the early transcript before the turn is confirmed (processors/agent/speculation.py) and sends the
sentences as ``speculative`` replies. TTS synthesises the first part of the reply's first sentence (its first clause,
or the whole sentence from the phrase cache) into this hold and publishes nothing: the caller may still be talking.
The engine's stream of that sentence stays open, suspended, with the rest not yet made. When the turn is confirmed
the agent sends the sentences again as SENTENCE records (same text, same seq); TTS sends the held part at once and
resumes the stream for the rest while it plays, as it would have done for a sentence made then. A DISCARD, a
barge-in's CANCEL or a hang-up drops it unheard (the rest is never made).

Why only the first part of the first sentence: TTS handles a call's records in order, so everything synthesised
speculatively comes before the confirmed first sentence; holding more would delay the first audio (the later
sentences are made while the first one plays, as without speculation), and a discarded speculation costs one clause.

Memory is bounded: one speculation per call (a newer one replaces it), at most ``max_audio_s`` of audio per call
(past it a sentence is not held and is made when confirmed), at most ``max_calls`` calls (the oldest goes first), and
a hold older than ``timeout_s`` is evicted (a confirmation comes within a second of the speculation, or never).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np

from switchboard import metrics
from switchboard.audio import BUS_RATE


@dataclass(slots=True)
class HeldSentence:
    text: str
    parts: list[np.ndarray]  # made already
    rest: AsyncIterator[np.ndarray] | None  # the engine's open stream for the rest (None: nothing more to make)


@dataclass(slots=True)
class Held:
    turn_seq: int
    spec_us: int  # ts_us of the speculation's first sentence record: names the speculation
    since: float  # clock() when it began
    sentences: dict[int, HeldSentence] = field(default_factory=dict)  # by seq
    samples: int = 0


class Hold:
    def __init__(
        self,
        timeout_s: float = 10.0,
        max_audio_s: float = 60.0,
        max_calls: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_samples = int(max_audio_s * BUS_RATE)
        self.max_calls = max_calls
        self.clock = clock
        self._held: OrderedDict[str, Held] = OrderedDict()  # oldest first: eviction pops from the front

    def __len__(self) -> int:
        self._expire()
        return len(self._held)

    def begin(self, call_id: str, turn_seq: int, spec_us: int) -> Held:
        """A new speculation of ``call_id``: whatever it held before is dropped."""
        self.drop(call_id)
        held = self._held[call_id] = Held(turn_seq, spec_us, self.clock())
        while len(self._held) > self.max_calls:
            _, oldest = self._held.popitem(last=False)
            metrics.TTS_HOLD.labels("expired").inc(len(oldest.sentences))
        return held

    def current(self, call_id: str) -> Held | None:
        self._expire()
        return self._held.get(call_id)

    def put(
        self, call_id: str, seq: int, text: str, parts: list[np.ndarray], rest: AsyncIterator[np.ndarray] | None
    ) -> bool:
        """Hold sentence ``seq``: its audio made so far and its open stream; False when the call has no hold or it
        is full (the sentence is then made when confirmed)."""
        held = self.current(call_id)
        samples = sum(len(a) for a in parts)
        if held is None or held.samples + samples > self.max_samples:
            metrics.TTS_HOLD.labels("expired").inc()
            return False
        held.sentences[seq] = HeldSentence(text, parts, rest)
        held.samples += samples
        return True

    def take(self, call_id: str, turn_seq: int, seq: int, text: str) -> HeldSentence | None:
        """The confirmed sentence (same turn, seq and text), once; None if it is not held."""
        held = self.current(call_id)
        if held is None or held.turn_seq != turn_seq or seq not in held.sentences:
            return None
        entry = held.sentences.pop(seq)
        if entry.text != text:
            metrics.TTS_HOLD.labels("unused").inc()
            return None
        metrics.TTS_HOLD.labels("released").inc()
        return entry

    def drop(self, call_id: str, through_turn_seq: int | None = None) -> int:
        """Forget the call's held audio (only if it answers a turn up to ``through_turn_seq``, when given)."""
        held = self._held.get(call_id)
        if held is None or (through_turn_seq is not None and held.turn_seq > through_turn_seq):
            return 0
        del self._held[call_id]
        metrics.TTS_HOLD.labels("dropped").inc(len(held.sentences))
        return len(held.sentences)

    def _expire(self) -> None:
        now = self.clock()
        while self._held:
            call_id, held = next(iter(self._held.items()))
            if now - held.since <= self.timeout_s:
                return
            del self._held[call_id]
            metrics.TTS_HOLD.labels("expired").inc(len(held.sentences))
