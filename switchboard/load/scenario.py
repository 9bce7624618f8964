"""Scripted conversations for the load generator, built from real speech clips.

Every clip is converted once to what a phone line carries (8 kHz μ-law, 20 ms frames, base64
as Twilio sends it) and shared by all callers, so a caller costs no audio work at run time.
A talking caller waits out the greeting, says clip A, waits for the answer to finish, says
clip B, and so on; a barge-in caller starts its first clip while the greeting is still playing.
A silent caller only keeps the line open with silence frames.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from switchboard.audio import Resampler, mulaw_encode, read_wav, rms_dbfs

PHONE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz: one Twilio media message
FRAME_S = 0.02
# A frame louder than this counts as voiced. The clips' noise floor sits at -55…-42 dBFS and
# their speech at -35…-20 dBFS; the instrument only needs the first and last voiced frame.
VOICED_DBFS = -38.0
SILENCE_PAYLOAD = base64.b64encode(mulaw_encode(np.zeros(FRAME_SAMPLES, dtype=np.int16))).decode()


class ScenarioError(ValueError):
    """The scenario cannot be built (no clips, unreadable clip, bad counts)."""


@dataclass(frozen=True)
class Clip:
    """One utterance as ready-to-send Twilio media payloads."""

    name: str
    payloads: tuple[str, ...]  # base64 μ-law, one per 20 ms frame
    first_voiced: int  # frame index of the speech onset
    last_voiced: int  # frame index of the end of speech

    @property
    def seconds(self) -> float:
        return len(self.payloads) * FRAME_S


def clip_from_samples(name: str, samples: np.ndarray, rate: int) -> Clip:
    """Resample to 8 kHz, μ-law encode, cut into 20 ms frames (the last padded with silence)."""
    phone = Resampler(rate, PHONE_RATE).process(samples) if rate != PHONE_RATE else samples.astype(np.int16)
    n = -(-len(phone) // FRAME_SAMPLES)
    if n == 0:
        raise ScenarioError(f"clip {name} is empty")
    frames = np.zeros(n * FRAME_SAMPLES, dtype=np.int16)
    frames[: len(phone)] = phone
    frames = frames.reshape(n, FRAME_SAMPLES)
    voiced = [i for i, f in enumerate(frames) if rms_dbfs(f) > VOICED_DBFS]
    if not voiced:
        raise ScenarioError(f"clip {name} has no frame above {VOICED_DBFS} dBFS: not speech")
    payloads = tuple(base64.b64encode(mulaw_encode(f)).decode() for f in frames)
    return Clip(name, payloads, voiced[0], voiced[-1])


def load_clips(folder: Path) -> list[Clip]:
    """Every ``*.wav`` in ``folder`` (PCM16 mono), sorted by name."""
    if not folder.is_dir():
        raise ScenarioError(f"clip folder {folder} does not exist")
    paths = sorted(folder.glob("*.wav"))
    if not paths:
        raise ScenarioError(f"no .wav clips in {folder}")
    clips = []
    for path in paths:
        try:
            samples, rate = read_wav(path)
        except Exception as exc:  # a broken file is the user's input: say which one, no traceback
            raise ScenarioError(f"cannot read {path}: {exc}") from None
        clips.append(clip_from_samples(path.name, samples, rate))
    return clips


@dataclass(frozen=True)
class CallPlan:
    """What one caller does, and when it dials (seconds after the run starts)."""

    index: int
    start_s: float
    turns: tuple[Clip, ...] = field(default_factory=tuple)  # empty: a silent caller
    barge_in: bool = False  # the first clip starts while the greeting is playing

    @property
    def silent(self) -> bool:
        return not self.turns


def build_plan(
    callers: int,
    ramp_s: float,
    clips: list[Clip],
    turns: int,
    *,
    silent: bool = False,
    barge_in_every: int = 0,
) -> list[CallPlan]:
    """Starts spread evenly over the ramp; caller i says clips i, i+1, … (rotating), so concurrent
    callers say different things; every ``barge_in_every``-th caller (0: none) talks over the greeting."""
    if callers < 1:
        raise ScenarioError("at least one caller")
    if ramp_s < 0:
        raise ScenarioError("the ramp cannot be negative")
    if not silent and (turns < 1 or not clips):
        raise ScenarioError("a talking caller needs at least one turn and one clip")
    step = ramp_s / callers if callers > 1 else 0.0
    plans = []
    for i in range(callers):
        said = () if silent else tuple(clips[(i + j) % len(clips)] for j in range(turns))
        barge = not silent and barge_in_every > 0 and i % barge_in_every == barge_in_every - 1
        plans.append(CallPlan(i, round(i * step, 3), said, barge))
    return plans
