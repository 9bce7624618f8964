"""``switchboard demo``: the pipeline on the embedded default, end to end, with figures."""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

from switchboard import logs
from switchboard.audio import BUS_RATE, read_wav, resample, write_wav
from switchboard.broker import free_port, port_open
from switchboard.caller import TwilioCaller, Utterance, non_silent
from switchboard.cli import print_call
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack
from switchboard.wer import wer

SCRIPT = (
    "Hi, I'd like to book an appointment please.",
    "Tuesday.",
    "Ten in the morning.",
    "Yes, that's right.",
    "No thanks, that's all. Goodbye.",
)


def run_demo(args: argparse.Namespace) -> int:
    logs.setup("demo", "WARNING")
    port = 8080 if not port_open("127.0.0.1", 8080) else free_port()
    broker_port = 9092 if not port_open("127.0.0.1", 9092) else free_port()
    stack = Stack(ServiceSettings(), ingress_port=port, broker_port=broker_port)
    print(f"starting tansu on :{broker_port}, the ingress on :{port} and the processors…", flush=True)
    try:
        stack.start(embedded=True)
        stack.wait_ready()
        print(f"ready. Logs: {stack.run_dir / 'logs'}\n", flush=True)
        status = asyncio.run(_calls(args, stack, port))
    finally:
        stack.stop()  # the sink flushes its last batch as it stops
    _report(args.out)
    return status


def _report(out: Path) -> None:
    """What the analysts see: the calls just made, read back from the embedded ClickHouse."""
    from sinks.report import open_reader, plot, run_reports
    from sinks.settings import SinkSettings

    reader = open_reader(SinkSettings())
    try:
        print("\n== switchboard report (from ClickHouse)")
        print(run_reports(reader, ["recent_calls", "recent_turns", "recent_transcripts", "latency_percentiles"], 60))
        for path in plot(reader, out):
            print(f"chart: {path}")
    finally:
        reader.close()


async def _calls(args: argparse.Namespace, stack: Stack, port: int) -> int:
    settings = ServiceSettings(kafka_bootstrap=stack.bootstrap)
    url = f"ws://127.0.0.1:{port}/twilio/media"
    args.out.mkdir(parents=True, exist_ok=True)
    from processors.tts.piper import PiperEngine

    piper = PiperEngine()
    print("== a scripted appointment call (the caller's lines spoken by Piper)")
    script = [Utterance(piper._synthesize(line), line) for line in SCRIPT]
    result = await TwilioCaller(url, settings).run(script)
    print_call(result, script)
    write_wav(args.out / "appointment-agent.wav", result.agent_wav(), 8000)

    responses: list[float] = []
    processing: list[float] = []
    failures = 0
    clips = sorted(args.audio_dir.glob("*.wav")) if args.audio_dir.is_dir() else []
    for clip in clips:
        samples, rate = read_wav(clip)
        reference = clip.with_suffix(".txt").read_text().strip() if clip.with_suffix(".txt").exists() else ""
        print(f"\n== {clip.name}: {reference!r}")
        r = await TwilioCaller(url, settings).run([Utterance(resample(samples, rate, BUS_RATE), clip.name)])
        print_call(r, [])
        heard = " ".join(r.transcripts[k] for k in sorted(r.transcripts))
        error = wer(reference, heard) if reference else None
        audio_ok = len(r.agent_audio) > 1 and non_silent(r.agent_audio[-1])
        if error is not None:
            print(f"  word error rate {error:.0%}; agent answered with {'audible' if audio_ok else 'NO'} audio")
        failures += int(not audio_ok)
        write_wav(args.out / f"{Path(clip).stem}-agent.wav", r.agent_wav(), 8000)
        for lat in r.latencies.values():
            if lat.response_ms is not None:
                responses.append(lat.response_ms)
            if lat.processing_ms is not None:
                processing.append(lat.processing_ms)
    for lat in result.latencies.values():
        if lat.response_ms is not None:
            responses.append(lat.response_ms)
            processing.append(lat.processing_ms or 0.0)
    if responses:
        print(
            f"\nresponse latency (end of speech → first agent audio): median {statistics.median(responses):.0f} ms, "
            f"max {max(responses):.0f} ms over {len(responses)} turns"
        )
        print(f"processing latency (turn detected → first agent audio): median {statistics.median(processing):.0f} ms")
    print(f"agent audio saved in {args.out}")
    return 1 if failures else 0
