"""Benchmark: turns that end together, decoded one by one against batched (Moonshine, ``SWITCHBOARD_MOONSHINE_BATCH``).

    .venv/bin/python bench/stt_batch.py [--turns 20] [--spread 5] [--batches 1,8] [--rounds 2]

What the STT worker meets when many callers finish speaking within a few seconds (the 20-talker load run: every
caller says ``librivox-0870.wav``, 7.1 s, first): ``--turns`` final decodes arriving evenly over ``--spread``
seconds, each through the engine's own stream interface on the process's inference pool (one thread per core, as
in the service). For each ``--batches`` value the same arrivals are replayed ``--rounds`` times, alternating, and
reported: each turn's latency from its arrival to its text (p50 / p95 / max), the time until the last text, the
process CPU per turn, and the batch sizes the engine used. The clips go through the phone path first.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processors.stt.moonshine import MoonshineEngine
from switchboard import inference
from switchboard.audio import BUS_RATE, mulaw_decode, mulaw_encode, read_wav, resample

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"


def phone_path(samples: np.ndarray, rate: int) -> np.ndarray:
    narrow = resample(resample(samples, rate, BUS_RATE), BUS_RATE, 8000)
    return resample(mulaw_decode(mulaw_encode(narrow)), 8000, BUS_RATE)


async def burst(engine: MoonshineEngine, audio: np.ndarray, turns: int, spread: float) -> tuple[list[float], float]:
    """Latency of each turn (arrival → text) and seconds until the last text."""
    start = time.perf_counter()

    async def one(i: int) -> float:
        await asyncio.sleep(spread * i / max(turns - 1, 1))
        arrived = time.perf_counter()
        stream = engine.open("en-US", BUS_RATE)
        await stream.push(audio)
        text = (await stream.finish()).text
        assert text, "the clip holds words"
        return time.perf_counter() - arrived

    latencies = await asyncio.gather(*(one(i) for i in range(turns)))
    return list(latencies), time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="final decodes in the burst")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which the turns end")
    parser.add_argument("--batches", default="1,8", help="comma-separated largest batches to compare")
    parser.add_argument("--rounds", type=int, default=2, help="replays of the burst per batch size (alternating)")
    parser.add_argument("--clip", default="librivox-0870.wav", help="the clip every turn says (from ../shared/audio)")
    args = parser.parse_args()

    audio = phone_path(*read_wav(AUDIO / args.clip))
    sizes = [int(b) for b in args.batches.split(",")]
    engines = {size: MoonshineEngine(max_batch=size) for size in sizes}
    print(f"{args.turns} turns of {len(audio) / BUS_RATE:.1f} s ending over {args.spread:g} s; "
          f"{inference.threads()} inference threads")
    results: dict[int, list[tuple[list[float], float, float]]] = {size: [] for size in sizes}
    batch_log: dict[int, list[int]] = {size: [] for size in sizes}
    for _ in range(args.rounds):
        for size, engine in engines.items():
            recorded: list[int] = []
            decode_batch = engine.decoder.decode_batch

            def recording(audios: list[np.ndarray], _decode=decode_batch, _log=recorded) -> list[str]:
                _log.append(len(audios))
                return _decode(audios)

            engine.decoder.decode_batch = recording
            cpu = time.process_time()
            latencies, total = asyncio.run(burst(engine, audio, args.turns, args.spread))
            results[size].append((latencies, total, (time.process_time() - cpu) / args.turns))
            engine.decoder.decode_batch = decode_batch
            batch_log[size] += recorded
    print("| largest batch | turn latency p50 / p95 / max (s) | last text after (s) | CPU per turn (ms) | batches |")
    print("| --- | --- | --- | --- | --- |")
    for size in sizes:
        for latencies, total, cpu in results[size]:
            print(f"| {size} | {statistics.median(latencies):.2f} / {pct(latencies, 95):.2f} / {max(latencies):.2f} "
                  f"| {total:.2f} | {cpu * 1000:.0f} | {sorted(batch_log[size], reverse=True)[:8]}… |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
