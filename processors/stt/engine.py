"""The speech-to-text interface every engine implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class SttResult:
    text: str
    final: bool
    audio_ms: int
    language: str
    confidence: float | None = None


class SttStream(Protocol):
    """One caller turn being recognised."""

    async def push(self, samples: np.ndarray) -> list[SttResult]:
        """Feed bus-rate int16 samples; returns any interim results ready now."""
        ...

    async def early(self) -> SttResult:
        """The turn so far, at a pause; the stream stays open and keeps its audio. ``final`` is True when the
        result is what ``finish`` would give for the same audio (a whole-turn decode), so it may stand in for it."""
        ...

    async def finish(self) -> SttResult:
        """End of turn: the final result."""
        ...

    async def cancel(self) -> None: ...


class SpeechToText(Protocol):
    name: str

    def open(self, language: str, sample_rate: int) -> SttStream: ...


class WholeTurnStream:
    """A turn recognised in one pass at its end (the offline engines): audio is kept until ``finish``, which
    decodes it with ``decode`` (off the event loop: the inference pool, or a ``BatchDecoder`` over it); a turn
    shorter than ``min_samples`` holds no word and gives ""."""

    def __init__(self, decode: Callable[[np.ndarray], Awaitable[str]], language: str, sample_rate: int,
                 min_samples: int = 1) -> None:
        self.decode = decode
        self.language = language
        self.sample_rate = sample_rate
        self.min_samples = min_samples
        self.parts: list[np.ndarray] = []

    async def push(self, samples: np.ndarray) -> list[SttResult]:
        self.parts.append(samples)
        return []

    async def early(self) -> SttResult:
        """Decode the audio so far on the inference pool, keeping it: the turn may go on after this pause."""
        return await self._decode(self._audio())

    async def finish(self) -> SttResult:
        audio = self._audio()
        self.parts = []
        return await self._decode(audio)

    def _audio(self) -> np.ndarray:
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]  # an early decode and the final one share the join
        return self.parts[0] if self.parts else np.zeros(0, dtype=np.int16)

    async def _decode(self, audio: np.ndarray) -> SttResult:
        text = await self.decode(audio) if len(audio) >= self.min_samples else ""
        return SttResult(text, True, len(audio) * 1000 // self.sample_rate, self.language)

    async def cancel(self) -> None:
        self.parts.clear()
