"""Never a lost turn on the STT stage: the cloud recogniser behind a breaker, the offline one behind it.

Each turn's audio is also kept (a turn is seconds of PCM), so when the cloud
recogniser fails mid-turn (error, unreachable, or no final within the
deadline) the turn is replayed into the offline recogniser and the caller is
still understood. While the breaker is open, new turns go straight to the
offline recogniser.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from processors.resilience import FALLBACKS, EngineGuard, EngineTimeout, describe
from processors.stt.engine import SpeechToText, SttResult, SttStream

logger = logging.getLogger(__name__)


class ResilientStt:
    def __init__(self, primary: SpeechToText, offline: SpeechToText, guard: EngineGuard, final_s: float = 1.5) -> None:
        self.primary, self.offline = primary, offline
        self.name = primary.name
        self.guard = guard
        self.final_s = final_s

    def open(self, language: str, sample_rate: int) -> SttStream:
        if not self.guard.available:
            return self.offline.open(language, sample_rate)
        return _Turn(self, language, sample_rate)

    def fell_back(self, reason: str) -> None:
        FALLBACKS.labels("stt", self.primary.name, self.offline.name).inc()
        logger.warning("stt fallback", extra={"fields": {"from": self.primary.name, "to": self.offline.name,
                                                         "reason": reason}})


class _Turn:
    def __init__(self, owner: ResilientStt, language: str, sample_rate: int) -> None:
        self.owner = owner
        self.language, self.sample_rate = language, sample_rate
        self.audio: list[np.ndarray] = []
        self.error: Exception | None = None
        self.stream: SttStream | None = None
        try:
            self.stream = owner.primary.open(language, sample_rate)
        except Exception as exc:
            self.error = exc

    async def push(self, samples: np.ndarray) -> list[SttResult]:
        self.audio.append(samples)
        if self.error is not None or self.stream is None:
            return []
        try:
            return await self.stream.push(samples)
        except Exception as exc:
            self.error = exc
            return []

    async def early(self) -> SttResult:
        """The primary engine's turn so far, at a pause. A failure here is kept for ``finish`` (which falls back to
        the offline engine) and gives an empty, non-final result: the turn then ends on its silence fallback."""
        empty = SttResult("", False, sum(len(a) for a in self.audio) * 1000 // self.sample_rate, self.language)
        early = getattr(self.stream, "early", None)
        if self.error is not None or early is None:
            return empty
        try:
            return await early()
        except Exception as exc:
            self.error = exc
            return empty

    async def finish(self) -> SttResult:
        async def final() -> SttResult:
            if self.error is not None:
                raise self.error
            assert self.stream is not None
            try:
                return await asyncio.wait_for(self.stream.finish(), self.owner.final_s)
            except TimeoutError as exc:
                raise EngineTimeout(f"no final within {self.owner.final_s:.2f} s") from exc

        try:
            return await self.owner.guard.call(final)
        except Exception as exc:
            self.owner.fell_back(describe(exc))
            if self.stream is not None:
                await self.stream.cancel()
            return await self._replay()

    async def _replay(self) -> SttResult:
        offline = self.owner.offline.open(self.language, self.sample_rate)
        for samples in self.audio:
            await offline.push(samples)
        return await offline.finish()

    async def cancel(self) -> None:
        self.audio.clear()
        if self.stream is not None:
            await self.stream.cancel()
