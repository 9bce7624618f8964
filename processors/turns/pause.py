"""One pause of a caller's turn and its end-of-turn judgement (``profiles.judge``): Smart Turn's probability of
the audio so far, started at the pause on the inference pool, and STT's early transcript of the same audio, which
comes back later on ``transcripts``. The turn detector (``logic.py``) owns when a pause starts and ends and what
its verdict does; this module owns what the verdict is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from processors.turns.profiles import TurnProfile, Verdict, hanging, judge
from switchboard import metrics
from switchboard.inference import run_inference
from switchboard.records import now_us

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Pause:
    """The judgement of one pause of the open turn, named by the turn's audio sent to STT up to it."""

    audio_ms: int
    detected_us: int
    smart: asyncio.Future[float] | None = None  # Smart Turn on the inference pool
    probability: float | None = None
    transcript: str | None = None  # the early transcript of exactly this pause
    verdict: Verdict | None = None
    verdict_heard: bool = False  # the verdict weighed the transcript; one on prosody alone is judged again with it
    decided_us: int | None = None

    def hear(self, model: Callable[[np.ndarray], float], samples_16k: np.ndarray) -> None:
        """Start Smart Turn on the turn's audio so far, off the event loop."""
        self.smart = asyncio.ensure_future(run_inference(model, samples_16k))
        self.smart.add_done_callback(_retrieve)

    def settle(self, profile: TurnProfile) -> None:
        """Give the pause its verdict once what it needs is known; called as frames and transcripts arrive.

        Unfinished prosody decides alone at once (the turn waits the longest silence), and is judged again when the
        words come: whole words shorten the wait to the profile's ``uncertain_end_ms``, hanging ones keep it."""
        if self.verdict is not None and (self.verdict_heard or self.transcript is None):
            return
        if self.probability is None and self.smart is not None and self.smart.done():
            self.probability, self.smart = _probability(self.smart), None
        verdict: Verdict | None = None
        if self.probability is not None:
            # Smart Turn may rule the turn unfinished alone; "finished" needs the transcript's word too
            if self.transcript is not None or self.probability < profile.smart_turn_threshold:
                verdict = judge(self.probability, self.transcript, profile)
        elif self.smart is None and self.transcript is not None:
            # no prosody (Smart Turn off or failed): the transcript alone can still show a sentence left hanging
            verdict = hanging(self.transcript, profile)
        if verdict is not None:
            self.verdict, self.verdict_heard = verdict, self.transcript is not None
            if self.decided_us is None:  # the decision's latency is the first verdict's
                self.decided_us = now_us()
                metrics.END_DECISION.observe(max(0, self.decided_us - self.detected_us) / 1e6)

    def drop(self) -> None:
        """The judgement no longer holds: a Smart Turn still queued for the pool is never run."""
        if self.smart is not None and not self.smart.done():
            self.smart.cancel()


def _retrieve(task: asyncio.Future[float]) -> None:
    """Mark a failed Smart Turn's exception as seen (it is reported where the result is read, if it is)."""
    if not task.cancelled():
        task.exception()


def _probability(task: asyncio.Future[float]) -> float | None:
    """Smart Turn's result; a failure is counted and the turn falls back to the transcript and the timeout."""
    if task.cancelled():
        return None
    exc = task.exception()
    if exc is not None:
        metrics.ENGINE_ERRORS.labels("turns", "smart-turn").inc()
        logger.warning("smart turn failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:200]}})
        return None
    return task.result()
