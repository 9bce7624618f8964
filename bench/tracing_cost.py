"""CPU cost of tracing (README "Tracing"): the same work with tracing off and on, spans exported over OTLP/HTTP to a
loopback receiver in another process (so its decoding is not counted; the exporter's thread is).

1. Per record, in one process, no broker: what the runner and the ingress add per record.
2. The turns worker whole (runner + logic + Silero) on a real tansu broker, as ``switchboard turns`` runs it: calls
   of real speech (one turn each: a ``turn`` span per call) pre-filled in 60 ms records, CPU per call-second, off and
   on alternately.

    .venv/bin/python bench/tracing_cost.py --calls 100 --reps 2
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import multiprocessing
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from switchboard import tracing
from switchboard.bus import Correlation
from switchboard.records import AgentReply, AudioFrame, ReplyKind, SpeechChunk
from switchboard.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "audio" / "librivox-0880.wav"
RECORD_MS = 60


def _serve(port: multiprocessing.Value) -> None:  # type: ignore[type-arg]
    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    port.value = server.server_address[1]
    server.serve_forever()


def receiver() -> tuple[multiprocessing.Process, str]:
    port = multiprocessing.Value("i", 0)
    proc = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    proc.start()
    while not port.value:
        time.sleep(0.01)
    return proc, f"http://127.0.0.1:{port.value}"


def cpu_us(fn, n: int) -> float:
    """CPU µs per call of ``fn`` (all threads of this process: the exporter's included)."""
    start = time.process_time()
    for _ in range(n):
        fn()
    tracing.flush()
    return (time.process_time() - start) / n * 1e6


def per_record(endpoint: str, n: int) -> None:
    corr = Correlation("CA1", "MZ1", "a", "CA1:7", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    frame = AudioFrame("CA1", 3, 0, 16000, b"\0" * 1920, 3)
    chunk = SpeechChunk("CA1", 7, 0, 0, 16000, b"", True, "en-US")
    reply = AgentReply("CA1", 7, 0, ReplyKind.SENTENCE, "Which day would suit you?", 3, "policy", 0)
    turns, stt, tts = tracing.STAGES["turns"], tracing.STAGES["stt"], tracing.STAGES["tts"]
    child = corr.child(7)

    def untraced_record() -> None:  # the turns worker's common case: an audio record, one output or none
        span = tracing.handle_span(turns, frame, corr.traceparent, "audio.in")
        if span is not None:
            span.stamp(chunk, child)
            span.end()

    def traced_handle() -> None:  # a stage: span around handle(), two outputs stamped, span ended and exported
        span = tracing.handle_span(tts, reply, corr.traceparent, "replies")
        if span is not None:
            span.stamp(frame, child)
            span.stamp(frame, child)
            span.end()

    def off_hook() -> None:  # what a traced handle costs while tracing is off: the runner's hook answers None
        tracing.handle_span(stt, chunk, corr.traceparent, "speech")

    rows = []
    for label, on in (("off", False), ("on", True)):
        tracing.shutdown()
        if on:
            tracing.setup("bench", ServiceSettings(otlp_endpoint=endpoint))
            window = tracing.AudioWindow(corr)  # the ingress's: one span, its context on every record
            rows.append((label, cpu_us(untraced_record, n), cpu_us(traced_handle, n // 10),
                         cpu_us(lambda w=window: w.corr(3), n)))
        else:
            rows.append((label, cpu_us(untraced_record, n), cpu_us(off_hook, n), None))
    tracing.shutdown()
    print("\nPer record, CPU µs (runner / ingress tracing steps only; median machine noise applies)")
    print("| tracing | a record of a traced processor, no stage (turns: audio) | a traced handle (span, 2 outputs, "
          "export) | ingress: caller audio record |")
    print("| --- | --- | --- | --- |")
    for label, a, b, c in rows:
        print(f"| {label} | {a:.2f} | {b:.2f} | {'—' if c is None else f'{c:.2f}'} |")


def speech_records(calls: int) -> list[list[bytes]]:
    from switchboard.audio import BUS_RATE, array_to_pcm16, read_wav, resample

    samples, rate = read_wav(CLIP)
    speech = resample(samples, rate, BUS_RATE)
    rng = np.random.default_rng(3)
    step = BUS_RATE * RECORD_MS // 1000
    out = []
    for _ in range(calls):
        noise = rng.normal(0, 30, BUS_RATE * 5).astype(np.int16)  # quiet line noise around the speech
        audio = np.concatenate([noise[: BUS_RATE], speech, noise[BUS_RATE : BUS_RATE * 3]])
        out.append([array_to_pcm16(audio[i : i + step]) for i in range(0, len(audio) - step + 1, step)])
    return out


async def worker_run(bootstrap: str, records: list[list[bytes]]) -> tuple[float, int]:
    """ms CPU per call-second of the turns worker over pre-filled audio, and the turns it ended."""
    from processors.turns import vad
    from processors.turns.logic import TurnDetector
    from processors.turns.settings import TurnsSettings
    from switchboard import metrics
    from switchboard.bus import Publisher, create_topics, make_producer
    from switchboard.runner import Runner

    # Smart Turn off: its model pass per pause would dominate both columns alike
    no_smart_turn = {"smart_turn": False} if "smart_turn" in TurnsSettings.model_fields else {}
    s = TurnsSettings(kafka_bootstrap=bootstrap, topic_prefix=f"tr{uuid.uuid4().hex[:6]}.", metrics_port=0,
                      **no_smart_turn)
    await create_topics(s)
    producer = make_producer(s)
    await producer.start()
    publisher = Publisher(s, producer, "bench")
    futures = []
    n = len(records[0])
    for r in range(n):
        for c, call in enumerate(records):
            frame = AudioFrame(f"CA{c}", r * RECORD_MS // 20, r * RECORD_MS * 1000, 16000, call[r], 3)
            corr = Correlation(call_id=f"CA{c}", traceparent=f"00-{c + 1:032x}-{1:016x}-01")
            futures.append(await publisher.send(frame, corr))
    await asyncio.gather(*futures)
    await producer.stop()
    runner = Runner(s, TurnDetector(s, vad.factory(s)))
    consumed = metrics.RECORDS_CONSUMED.labels("turns", "audio.in")
    turns = metrics.TURNS
    base, turns_base = consumed._value.get(), turns._value.get()
    task = asyncio.create_task(runner.run())
    while consumed._value.get() == base:
        await asyncio.sleep(0.01)
    cpu, start = time.process_time(), consumed._value.get()
    while consumed._value.get() - base < len(records) * n or runner.inflight.count:
        await asyncio.sleep(0.01)
    tracing.flush()
    cpu = time.process_time() - cpu
    handled = consumed._value.get() - start
    runner.stop()
    await task
    return cpu * 1000 / (handled * RECORD_MS / 1000), int(turns._value.get() - turns_base)


def worker(endpoint: str, calls: int, reps: int) -> None:
    from switchboard.broker import EmbeddedBroker

    records = speech_records(calls)
    results: dict[str, list[float]] = {"off": [], "on": []}
    turns: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "tansu.log").start()
        try:
            for _ in range(reps):
                for label in ("off", "on"):
                    tracing.shutdown()
                    if label == "on":
                        tracing.setup("turns", ServiceSettings(otlp_endpoint=endpoint))
                    ms, turns[label] = asyncio.run(worker_run(broker.bootstrap, records))
                    results[label].append(ms)
                    print(f"  {label}: {ms:.2f} ms CPU per call-second ({turns[label]} turns)", flush=True)
        finally:
            tracing.shutdown()
            broker.stop()
    seconds = len(records[0]) * RECORD_MS / 1000
    print(f"\nThe turns worker on tansu, {calls} calls x {seconds:.1f} s (one spoken turn each, {RECORD_MS} ms "
          f"records, Smart Turn off), {reps} runs each, alternating; ms CPU per call-second")
    print("| tracing | median | runs |")
    print("| --- | --- | --- |")
    for label, values in results.items():
        print(f"| {label} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="per-record part: timed iterations")
    parser.add_argument("--calls", type=int, default=100, help="worker part: calls at once")
    parser.add_argument("--reps", type=int, default=2, help="worker part: runs with tracing off and on, alternating")
    parser.add_argument("--only", choices=("record", "worker"), help="run one part only")
    args = parser.parse_args()
    proc, endpoint = receiver()
    try:
        if args.only in (None, "record"):
            per_record(endpoint, args.records)
        if args.only in (None, "worker"):
            worker(endpoint, args.calls, args.reps)
    finally:
        proc.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
