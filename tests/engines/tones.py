"""A stand-in TTS engine for timing tests: a short tone per sentence, instantly (no model to load)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from switchboard.audio import BUS_RATE


class ToneEngine:
    name = "tone"

    def __init__(self) -> None:
        self.spoken: list[tuple[str, str | None]] = []

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        self.spoken.append((text, voice))
        t = np.arange(BUS_RATE // 10) / BUS_RATE
        yield (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
