"""The speech-to-text interface every engine implements."""

from __future__ import annotations

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

    async def finish(self) -> SttResult:
        """End of turn: the final result."""
        ...

    async def cancel(self) -> None: ...


class SpeechToText(Protocol):
    name: str

    def open(self, language: str, sample_rate: int) -> SttStream: ...
