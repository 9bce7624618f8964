"""Caller sentences with a hesitation in the middle, spoken by Piper at run time (no audio file is shipped).

A sentence is synthesised whole with a comma where the caller hesitates ("I'd like to book an,
appointment on Friday."), so the words before the pause carry the rising, unfinished intonation
of a real hesitation rather than the falling end of a sentence; the comma's own short gap is then
found and stretched to ``pause_ms`` of digital silence. The phone path (8 kHz μ-law) is applied by
whoever sends it (the Twilio caller does; ``phone`` here for tests without the ingress).

Piper's noise is turned off (``noise_scale`` 0): VITS otherwise samples a different voice every
run (Smart Turn gave one "Yes, that's right." 0.65, 0.88 and 0.93 in three syntheses), and a
specification must hear the same caller each time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchboard.audio import BUS_RATE, Resampler, mulaw_decode, mulaw_encode, resample

RATE = 16_000


@dataclass(frozen=True)
class Hesitation:
    first: str  # before the pause: left hanging
    second: str  # after it
    heard: tuple[str, ...]  # words (lowercase) of both halves that the final transcript must hold

    @property
    def text(self) -> str:
        return f"{self.first} {self.second}"


# Each is left hanging at the pause, by its intonation (Smart Turn) or by the early transcript's
# last word: the cut-off halves are heard as "I'd like to book in.", "My name is." and "Could you
# tell me that?" (Smart Turn: 0.56, 0.67, 0.97 complete), the rest are unfinished to Smart Turn. Where the
# recogniser's window falls depends on the caller's timing: the last was also heard "Could you tell me this?"
# once in four calls (the onset three frames later), which is why demonstratives count as dangling.
HESITATIONS = (
    Hesitation("I'd like to book an", "appointment on Friday.", ("book", "friday")),
    Hesitation("Can I come in on", "Tuesday morning?", ("tuesday", "morning")),
    Hesitation("I need to cancel my", "appointment for next week.", ("cancel", "week")),
    Hesitation("I was wondering if you could", "move my appointment.", ("wondering", "move")),
    Hesitation("My name is", "John Smith.", ("name", "smith")),
    Hesitation("Could you tell me the", "opening hours on Saturday?", ("tell", "saturday")),
)


def phone(samples: np.ndarray) -> np.ndarray:
    """16 kHz → 8 kHz μ-law → 16 kHz, as a Twilio call's audio reaches the bus."""
    return resample(mulaw_decode(mulaw_encode(resample(samples, RATE, 8000))), 8000, RATE)


def _gap(samples: np.ndarray, threshold: float = 300.0) -> tuple[int, int]:
    """The longest quiet stretch (10 ms windows under ``threshold`` mean amplitude) inside the speech."""
    w = RATE // 100
    energy = np.abs(samples[: len(samples) // w * w].astype(np.float64)).reshape(-1, w).mean(axis=1)
    loud = np.nonzero(energy > threshold)[0]
    best, run = (0, 0), None
    for i in range(int(loud[0]), int(loud[-1])):
        if energy[i] <= threshold:
            run = i if run is None else run
            if i + 1 - run > best[1] - best[0]:
                best = (run, i + 1)
        else:
            run = None
    return best[0] * w, best[1] * w


def hesitating(piper, h: Hesitation, pause_ms: int = 450) -> np.ndarray:
    """``h`` spoken by Piper (bus rate) with ``pause_ms`` of silence where the caller hesitates."""
    audio = spoken(piper, f"{h.first}, {h.second}")
    start, end = _gap(audio)
    return np.concatenate([audio[:start], np.zeros(RATE * pause_ms // 1000, dtype=np.int16), audio[end:]])


def spoken(piper, text: str) -> np.ndarray:
    """``text`` in Piper's joe voice at the bus rate, the same samples every time."""
    from piper import SynthesisConfig

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=True)
    resampler = Resampler(piper.rate, BUS_RATE)
    chunks = [resampler.process(piper._pcm(c.audio_float_array)) for c in piper.voice.synthesize(text, config)]
    return np.concatenate(chunks)


def cough(ms: int = 150, seed: int = 7) -> np.ndarray:
    """A short cough between 200 ms silences (16 kHz): a burst of low-passed noise with a fast attack and a decay."""
    rng = np.random.default_rng(seed)
    n = RATE * ms // 1000
    noise = np.convolve(rng.standard_normal(n + 15), np.ones(16) / 16, mode="valid")[:n]
    envelope = np.minimum(1.0, np.arange(n) / (RATE // 100)) * np.exp(-np.arange(n) / (RATE * 60 // 1000))
    burst = (12000 * noise / np.abs(noise).max() * envelope).astype(np.int16)
    silence = np.zeros(RATE // 5, dtype=np.int16)
    return np.concatenate([silence, burst, silence])
