"""Where the ingress's CPU goes per caller frame: cProfile of a real ingress under `switchboard load`.

Starts its own tansu and one ingress in this process (the real app under uvicorn, authentication on, a load-test
node: the generator's address exempt from the per-source limits), profiles it while `switchboard load` (another
process) calls it with silent Twilio callers, then prints the ingress's CPU per call-second (from getrusage, which
includes the profiler's own overhead, so compare runs with each other, not with the load stacks) and the functions
that cost most, grouped by what they do. No processors run: this is the ingress alone, and the broker beside it.

    .venv/bin/python bench/ingress_profile.py --callers 100 --duration 20 --record-ms 20
    .venv/bin/python bench/ingress_profile.py --callers 100 --duration 20 --record-ms 60 --top 25
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import uvicorn

from ingress.app import create_app
from ingress.settings import IngressSettings
from switchboard.broker import EmbeddedBroker, free_port
from switchboard.bus import create_topics
from switchboard.credentials import StackCredentials
from switchboard.load.procs import cpu_seconds

# where a caller frame's CPU goes: the cumulative time of each step's entry point (file suffix, function)
STEPS = (
    ("socket read (websockets, Inbox)", "ingress/websocket.py", "next"),
    ("Twilio parse (JSON, checks, base64)", "ingress/twilio/serializer.py", "parse"),
    ("mu-law decode", "switchboard/audio.py", "mulaw_decode"),
    ("resample 8 -> 16 kHz", "switchboard/audio.py", "process"),
    ("call: budget, records (caller_audio)", "ingress/calls.py", "caller_audio"),
    ("Avro encode", "switchboard/codec.py", "encode"),
    ("Publisher.send (encode + producer)", "switchboard/bus.py", "send"),
    ("aiokafka producer.send", "aiokafka/producer/producer.py", "send"),
    ("producer's sender (requests to tansu)", "aiokafka/producer/sender.py", "_send_produce_req"),
    ("whole Twilio handler", "ingress/twilio/handler.py", "handle"),
)


async def serve_and_load(args: argparse.Namespace, run_dir: Path, broker: EmbeddedBroker) -> tuple[float, float]:
    creds = StackCredentials.ensure(run_dir, environ={})
    secrets = {k.removeprefix("SWITCHBOARD_").lower(): v for k, v in creds.ingress_env().items()}
    port = free_port()
    # (a tree from before the record-duration setting runs too: compare the same harness on both)
    record = {"audio_record_ms": args.record_ms} if "audio_record_ms" in IngressSettings.model_fields else {}
    settings = IngressSettings(
        kafka_bootstrap=broker.bootstrap, topic_prefix=f"prof{uuid.uuid4().hex[:6]}.", port=port, auth="on",
        max_calls=1000, source_limit_exempt="127.0.0.1/32", **record, **secrets,
    )
    await create_topics(settings)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None,
                                           lifespan="on", ws_max_size=1 << 20, proxy_headers=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    load = [sys.executable, "-m", "switchboard.cli", "load", "--url", f"http://127.0.0.1:{port}", "--run-dir",
            str(run_dir), "--callers", str(args.callers), "--ramp", str(args.ramp), "--duration", str(args.duration),
            "--silent", "--no-progress", "--json", str(run_dir / "load.json"), "--turns-metrics",
            "http://127.0.0.1:9/metrics"]
    proc = await asyncio.create_subprocess_exec(*load, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    profiler = cProfile.Profile()
    cpu0, broker0 = resource.getrusage(resource.RUSAGE_SELF), cpu_seconds(broker.process.pid) or 0.0
    profiler.enable()
    _, err = await proc.communicate()
    profiler.disable()
    if proc.returncode:
        print(f"switchboard load exited with {proc.returncode}: {err.decode()[-2000:]}", file=sys.stderr)
    cpu1, broker1 = resource.getrusage(resource.RUSAGE_SELF), cpu_seconds(broker.process.pid) or 0.0
    server.should_exit = True
    await asyncio.wait_for(task, 30)
    profiler.dump_stats(str(args.out))
    with contextlib.suppress(OSError):
        shutil.copy(run_dir / "load.json", args.out.with_suffix(".load.json"))
    own = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return own, broker1 - broker0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--ramp", type=float, default=5)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--record-ms", type=int, default=20)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "ingress.prof")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="switchboard-prof-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "tansu.log").start()
        try:
            started = time.monotonic()
            own, broker_cpu = asyncio.run(serve_and_load(args, Path(tmp), broker))
            wall = time.monotonic() - started
        finally:
            broker.stop()
    call_s = args.callers * max(1.0, args.duration - args.ramp / 2)  # each caller is on from its start to the cap
    stats = pstats.Stats(str(args.out))
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"record {args.record_ms} ms, {args.callers} silent callers, {wall:.0f} s, ~{call_s:.0f} call-s; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"ingress CPU {own:.1f} s (profiled) = {own / call_s * 1000:.2f} ms per call-second; "
          f"broker {broker_cpu:.1f} s = {broker_cpu / call_s * 1000:.2f} ms per call-second")
    print(f"profiled time {total:.1f} s; cumulative time of each step, % of it and ms per call-second:")
    for name, suffix, func in STEPS:
        cum = sum(v[3] for (f, _l, fn), v in stats.stats.items()  # type: ignore[attr-defined]
                  if fn == func and f.endswith(suffix))
        print(f"  {name:40s} {cum / total * 100:5.1f} %  {cum / call_s * 1000:6.2f} ms")
    if (run_dir_json := args.out.with_suffix(".load.json")).exists():
        frames = json.loads(run_dir_json.read_text())["summary"]["frames"]
        print(f"frames sent {frames.get('sent')}")
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
