"""Benchmark: the offline STT engines, Moonshine base-en (default) against faster-whisper tiny.en.

    .venv/bin/python bench/stt_engines.py [--runs 5] [--engines moonshine,whisper]

For 1 s, 3 s and 6 s of real speech (the start of ``../shared/audio/librivox-0870.wav``, sent
through the phone path: 16 kHz → 8 kHz → μ-law → 16 kHz) each engine decodes the turn ``--runs``
times after a warm-up, one decode at a time, as configured by default (Moonshine: one thread per
session; Whisper: ``SWITCHBOARD_WHISPER_THREADS``, 2). Reported: the median wall time of a decode,
and the median process CPU time per second of audio (all threads, so a 2-thread engine pays for both).
Then each engine's word error on every clip in ``../shared/audio`` through the same phone path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processors.stt.main import create_offline
from processors.stt.settings import SttSettings
from switchboard.audio import BUS_RATE, mulaw_decode, mulaw_encode, read_wav, resample
from switchboard.wer import normalise, wer

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
LENGTHS_S = (1, 3, 6)


def phone_path(samples: np.ndarray, rate: int) -> np.ndarray:
    narrow = resample(resample(samples, rate, BUS_RATE), BUS_RATE, 8000)
    return resample(mulaw_decode(mulaw_encode(narrow)), 8000, BUS_RATE)


def timed(transcribe, audio: np.ndarray, runs: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds of one decode."""
    transcribe(audio)  # warm-up: first-call allocations and pre-packing
    walls, cpus = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        transcribe(audio)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="decodes per length and engine (median reported)")
    parser.add_argument("--engines", default="moonshine,whisper", help="comma-separated: moonshine, whisper")
    args = parser.parse_args()

    settings = SttSettings()
    samples, rate = read_wav(AUDIO / "librivox-0870.wav")
    speech = phone_path(samples, rate)
    clips = {p.name: (p.with_suffix(".txt").read_text(), phone_path(*read_wav(p))) for p in sorted(AUDIO.glob("*.wav"))}

    rows, accuracy = [], []
    for name in args.engines.split(","):
        t0 = time.perf_counter()
        engine = create_offline(settings, name)
        load_s = time.perf_counter() - t0
        transcribe = engine.model.transcribe if name == "moonshine" else engine.transcribe
        cells = []
        for seconds in LENGTHS_S:
            wall, cpu = timed(transcribe, speech[: seconds * BUS_RATE], args.runs)
            cells.append((seconds, wall, cpu))
        rows.append((name, load_s, cells))
        errors = words = 0.0
        per_clip = []
        for clip, (reference, audio) in clips.items():
            heard = transcribe(audio)
            n = len(normalise(reference))
            errors += wer(reference, heard) * n
            words += n
            per_clip.append(f"{clip.removesuffix('.wav')} {wer(reference, heard):.0%}")
        accuracy.append((name, errors / words, per_clip))

    print(f"\nDecode time, median of {args.runs} runs (phone-path speech, one decode at a time):\n")
    print("| engine | load | " + " | ".join(f"{s} s: wall / CPU per audio s" for s in LENGTHS_S) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in LENGTHS_S) + " |")
    for name, load_s, cells in rows:
        shown = " | ".join(f"{wall * 1000:.0f} ms / {cpu / seconds:.3f}" for seconds, wall, cpu in cells)
        print(f"| {name} | {load_s:.1f} s | {shown} |")
    print("\nWord error through the phone path (all clips, weighted by words; each clip):\n")
    for name, total, per_clip in accuracy:
        print(f"- {name}: {total:.1%} ({', '.join(per_clip)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
