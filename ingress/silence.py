"""A silent caller: prompted once, then let go (README "Silence and the keypad").

The ingress owns the timer because it alone knows when the agent's reply has played out on the phone (the call's
player writes it at real-time pace and records ``playback_finished``) and when the caller made a sound or pressed a
key. The timer starts when a reply finishes playing, stops while the next one plays, and restarts at the caller's
newest loud audio or key press, then with ``answer_s`` more: a caller who spoke is owed an answer, not a prompt. A
slow answer (a stage restarting after a crash; the filler covers the wait) is not preceded by "Are you still
there?", while a cough that never became a turn still ends in a prompt, later. ``prompt_s`` after its start the
ingress publishes a ``silence`` call event with stage ``prompt`` (the agent asks "Are you still there?"),
``hangup_s`` after the same start one with stage ``hangup`` (the agent says goodbye and ends the call); the prompt's
own playback does not restart it. If no goodbye has ended the call ``close_grace_s`` later (the agent is down), the
ingress closes the call itself.

Cost: no task and no work per audio frame. The call's player already waits for its next deadline (drain, filler);
this adds one more to the same wait, and reads the speech cue's time of the newest loud audio when it computes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROMPT, HANGUP, CLOSE = "prompt", "hangup", "close"
_STAGES = (PROMPT, HANGUP, CLOSE)


@dataclass(frozen=True, slots=True)
class SilencePolicy:
    """When a silent caller is prompted and let go (IngressSettings ``silence_prompt_s``, ``silence_hangup_s``)."""

    prompt_s: float = 8.0  # 0: no prompt
    hangup_s: float = 30.0  # 0: never let go
    close_grace_s: float = 10.0  # after the hang-up event, how long the agent's goodbye may take to end the call
    answer_s: float = 15.0  # after the caller spoke or pressed a key: how long their answer is awaited before counting

    @classmethod
    def of(cls, playback: Any) -> SilencePolicy:
        """From the node's PlaybackPolicy (ingress/filler.py), which carries the settings."""
        return cls(playback.silence_prompt_s, playback.silence_hangup_s, answer_s=playback.silence_answer_s)


class SilenceTimer:
    """One call's silence timer: a start time and the stages already reached; the caller's player asks it when it is
    next due and fires it."""

    __slots__ = ("by_caller", "policy", "stage", "start", "turns")

    def __init__(self, policy: SilencePolicy) -> None:
        self.policy = policy
        self.start: float | None = None  # monotonic time the silence began; None while the agent speaks
        self.stage = 0  # stages fired since the start: 0 none, 1 prompt, 2 hang-up, 3 closed
        self.turns: set[int] = set()  # turn_seqs of the silence events: their replies do not restart the timer
        self.by_caller = False  # the silence was restarted by the caller: their answer is awaited first

    def played(self, now: float) -> None:
        """A reply finished playing on the phone: the caller's silence starts now."""
        self.start, self.stage, self.by_caller = now, 0, False

    def speaking(self) -> None:
        """A reply started playing: nobody is waiting on the caller until it ends."""
        self.start = None

    def heard(self, at: float) -> None:
        """The caller spoke (loud audio) or pressed a key at ``at``: the silence starts again from there."""
        if self.start is not None and at > self.start:
            self.start, self.stage, self.by_caller = at, 0, True

    def due_at(self, last_heard: float = 0.0) -> float | None:
        """Monotonic time of the next stage, or None (no silence running, or nothing left to do)."""
        nxt = self._next(last_heard)
        return None if nxt is None else nxt[0]

    def fire(self, now: float, last_heard: float = 0.0) -> str | None:
        """The stage due by ``now`` (``prompt``, ``hangup`` or ``close``), marked as done; None if none is due."""
        nxt = self._next(last_heard)
        if nxt is None or nxt[0] > now:
            return None
        self.stage = nxt[1]
        return _STAGES[self.stage - 1]

    def _next(self, last_heard: float) -> tuple[float, int] | None:
        self.heard(last_heard)
        if self.start is None:
            return None
        p = self.policy
        start = self.start + (p.answer_s if self.by_caller else 0.0)
        if self.stage == 0 and p.prompt_s > 0 and (p.hangup_s <= 0 or p.prompt_s < p.hangup_s):
            return start + p.prompt_s, 1
        if self.stage <= 1 and p.hangup_s > 0:
            return start + p.hangup_s, 2
        if self.stage == 2:
            return start + p.hangup_s + p.close_grace_s, 3
        return None

    def silent_s(self, now: float) -> float:
        return 0.0 if self.start is None else now - self.start
