"""When a reply is late or lost: the filler, and the end of a reply whose END never came.

The caller never waits in silence. The ingress learns that a caller has finished speaking from the audio it already
handles, not from the turns processor: a cheap energy cue per call ("the caller spoke, then went quiet") works when
the turns worker is the one that died, and needs no new record on the bus. Only audio heard while no agent audio is
playing or queued counts, so the agent's own echo and a caller talking over a reply never arm it. When the caller has
said at least ``filler_min_speech_ms`` and no agent audio has started ``filler_after_ms`` after their last loud
frame, the call's filler phrase ("One moment, please.") plays once; the real reply plays after it, never over it.

Where the filler's audio comes from: the TTS processor, which has the voice (the ingress has no Piper, and in compose
and Kubernetes is its own container), publishes the filler from its phrase cache to the call's reply partition when
the call starts (``AudioOut`` kind ``filler``), and the ingress keeps it with the call (about 1 s of 16 kHz PCM, 40 KB).
So the filler is in the caller's agent voice, is ready before any fault, and plays even while TTS is down.

Cost: one float32 dot product per caller message (a few microseconds per 20 ms; README "Faults the caller hears").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from switchboard.audio import BUS_RATE

FULL_SCALE = 32768.0


@dataclass(frozen=True, slots=True)
class PlaybackPolicy:
    """How the ingress covers a late reply and a lost end of reply (IngressSettings, README settings table)."""

    filler_after_s: float = 1.5  # 0: no filler
    filler_min_speech_ms: int = 300
    filler_speech_dbfs: float = -40.0
    end_grace_s: float = 1.0
    silence_prompt_s: float = 8.0  # a silent caller (ingress/silence.py): prompted after this, 0: never
    silence_hangup_s: float = 30.0  # ... and let go after this, 0: never
    silence_answer_s: float = 15.0  # after the caller spoke: their answer is awaited this long first

    @classmethod
    def from_settings(cls, settings: Any) -> PlaybackPolicy:
        """From IngressSettings; other settings (a test's plain ServiceSettings) get the defaults."""
        d = cls()
        return cls(
            getattr(settings, "filler_after_ms", d.filler_after_s * 1000) / 1000,
            getattr(settings, "filler_min_speech_ms", d.filler_min_speech_ms),
            getattr(settings, "filler_speech_dbfs", d.filler_speech_dbfs),
            getattr(settings, "playback_end_grace_ms", d.end_grace_s * 1000) / 1000,
            getattr(settings, "silence_prompt_s", d.silence_prompt_s),
            getattr(settings, "silence_hangup_s", d.silence_hangup_s),
            getattr(settings, "silence_answer_s", d.silence_answer_s),
        )


class SpeechCue:
    """The cue "the caller spoke, then went quiet", from the energy of their audio; one per call."""

    __slots__ = ("after_s", "last_loud", "min_samples", "spoken", "threshold")

    def __init__(self, policy: PlaybackPolicy) -> None:
        self.after_s = policy.filler_after_s
        self.min_samples = policy.filler_min_speech_ms * BUS_RATE // 1000
        # compared with the sum of squares of a message, so no square root and no division per message
        self.threshold = (FULL_SCALE * 10 ** (policy.filler_speech_dbfs / 20)) ** 2
        self.spoken = 0  # loud samples heard since the cue was last reset
        self.last_loud = 0.0  # monotonic time of the newest loud message

    def hear(self, samples: np.ndarray) -> bool:
        """Caller audio heard while no agent audio plays; True when it has just armed the cue (wake the player)."""
        n = len(samples)
        if not n:
            return False
        x = samples.astype(np.float32)
        if float(np.dot(x, x)) <= self.threshold * n:
            return False
        armed = self.spoken >= self.min_samples
        self.spoken += n
        self.last_loud = time.monotonic()
        return not armed and self.spoken >= self.min_samples

    def reset(self) -> None:
        """Agent audio is playing (or the filler was due): the caller's speech so far is answered."""
        self.spoken = 0

    def due_at(self) -> float | None:
        """Monotonic time the filler is due if no agent audio starts before, or None (not armed)."""
        if self.after_s <= 0 or self.spoken < self.min_samples:
            return None
        return self.last_loud + self.after_s
