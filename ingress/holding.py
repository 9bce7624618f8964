"""Holding a reply at the ingress: the pause / resume half of a call's playback (README "Interruptions").

``ReplyHolding`` is part of ``CallSession`` (ingress/calls.py), kept here so that the call's module stays about the
call; ``ingress/heard.py`` has the arithmetic (what was heard, what the phone still holds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from ingress.heard import Hold, ReplyAudio, frames_on_phone, parse_sentence_mark, sentence_mark, sentence_of
from switchboard import metrics
from switchboard.audio import BUS_RATE
from switchboard.records import CallEventKind, PlaybackCommand, now_us

logger = logging.getLogger("ingress.calls")


class ReplyHolding:
    """Pause, resume, sentence marks and their echoes. The attributes it uses are the session's (``CallSession``)."""

    _replies: dict[int, ReplyAudio]
    _hold: Hold | None
    _clock: float
    _last_written: tuple[int, int] | None
    _cleared_through: int
    _playing_turn: int | None
    _lead_s: float
    _queue: Any
    _wake: asyncio.Event
    socket: Any
    publisher: Any
    corr: Any
    hold_policy: Any

    def _event(self, kind: CallEventKind, turn_seq: int | None = None, reason: str | None = None) -> Any: ...

    def _requeue(self, turn_seq: int, seq: int, samples: np.ndarray) -> None: ...

    def _reply(self, turn_seq: int) -> ReplyAudio:
        if turn_seq not in self._replies:
            self._replies[turn_seq] = ReplyAudio(turn_seq, keep_frames=int(self._lead_s / 0.02) + 5)
        return self._replies[turn_seq]

    def mark_played(self, name: str) -> None:
        """A Twilio mark echo: the audio before it has played. A held or cleared reply's echoes are not taken: Twilio
        echoes the marks a clear dropped as well."""
        named = parse_sentence_mark(name)
        if named is None or self._hold is not None or named[0] <= self._cleared_through:
            return
        if (reply := self._replies.get(named[0])) is not None:
            reply.echoed.add(named[1])

    def _take_back(self, turn: int, now: float) -> None:
        """The socket's clear went out: the frames the phone had not played go back to the head of the queue."""
        if (reply := self._replies.get(turn)) is not None:
            for seq, samples in reversed(reply.take_back(frames_on_phone(self._clock, now))):
                self._requeue(turn, seq, samples)
        self._clock = now
        self._last_written = None  # the next frame written is the first after the cut: no sentence mark before it

    async def _pause(self, cmd: PlaybackCommand) -> None:
        """Caller voice over the reply: stop it on the phone and keep what they have not heard, until a resume or a
        clear (or the grace: then it plays on). A reply about to end is let end (README "Interruptions")."""
        turn, now = self._playing_turn, time.monotonic()
        if turn is None or turn > cmd.through_turn_seq or self._hold is not None:
            return  # nothing of those replies is playing (the filler is no reply), or already held
        reply = self._replies.get(turn)
        left_s = max(0.0, self._clock - now) + sum(len(c.samples) for c in self._queue if c.turn_seq == turn) / BUS_RATE
        if reply is not None and reply.ended and left_s < self.hold_policy.end_guard_s:
            metrics.PLAYBACK_HOLDS.labels("near_end").inc()
            return
        await self.socket.send_clear()
        reaction = max(0.0, (now_us() - cmd.speech_onset_us) / 1e6)
        metrics.BARGE_IN_REACTION.observe(reaction)
        metrics.PLAYBACK_HOLDS.labels("paused").inc()
        self._hold = Hold(turn, now + self.hold_policy.grace_s, cmd.speech_onset_us, reaction)
        self._take_back(turn, now)
        event = self._event(CallEventKind.PLAYBACK_PAUSED, turn, reason=f"barge_in reaction {reaction * 1000:.0f} ms")
        event.attributes = {**event.attributes, "reaction_ms": f"{reaction * 1000:.0f}"}
        await self.publisher.send(event, self.corr.child(turn))

    async def _resume(self, reason: str) -> None:
        """The held reply plays on from the frame the caller had reached."""
        hold, self._hold = self._hold, None
        if hold is None:
            return
        metrics.PLAYBACK_HOLDS.labels("resumed" if reason == "resume" else "grace").inc()
        self._clock = max(self._clock, time.monotonic())
        self._wake.set()
        await self.publisher.send(self._event(CallEventKind.PLAYBACK_RESUMED, hold.turn_seq, reason=reason),
                                  self.corr.child(hold.turn_seq))

    async def _held(self) -> None:
        """The player while a reply is held: nothing is written, nothing drains; it plays on by itself at the grace."""
        assert self._hold is not None
        wait = self._hold.until - time.monotonic()
        if wait <= 0:
            logger.warning("held reply: no resume or clear came; playing on",
                           extra={"fields": {"turn": self._hold.turn_seq}})
            await self._resume(f"grace: no resume or clear {self.hold_policy.grace_s:g} s after the pause")
            return
        self._wake.clear()
        try:
            async with asyncio.timeout(wait):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _sentence_boundary(self, turn_seq: int, seq: int) -> None:
        """Before a reply's next sentence: mark the end of the one before (Twilio echoes it once played)."""
        here = (turn_seq, sentence_of(seq))
        last, self._last_written = self._last_written, here
        if last is not None and last != here and last[0] == here[0]:
            await self.socket.send_mark(sentence_mark(*last))
