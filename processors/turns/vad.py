"""Voice activity engines behind one small interface."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class VoiceActivity(Protocol):
    frame_ms: int

    def is_speech(self, frame: np.ndarray, sample_rate: int) -> bool:
        """One ``frame_ms`` frame of int16 samples."""
        ...


class WebRtcVad:
    frame_ms = 20

    def __init__(self, aggressiveness: int) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray, sample_rate: int) -> bool:
        return bool(self._vad.is_speech(frame.astype("<i2").tobytes(), sample_rate))


def create(engine: str, aggressiveness: int) -> VoiceActivity:
    if engine == "webrtc":
        return WebRtcVad(aggressiveness)
    raise ValueError(f"unknown VAD engine {engine!r} (choose: webrtc)")
