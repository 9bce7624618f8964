"""The ``switchboard`` command: run the stack, one service, a simulated call, the demo."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from switchboard.services import SERVICES
from switchboard.settings import ServiceSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AUDIO_DIR = ROOT.parent / "shared" / "audio"

# Modules with a ``register(subparsers)`` adding more commands.
COMMANDS: tuple[str, ...] = ("sinks.commands", "switchboard.load.command")


def _scale_item(item: str) -> tuple[str, int]:
    """``SERVICE=N`` of ``--scale`` (argparse turns the error into a usage line and exit code 2)."""
    name, _, n = item.partition("=")
    if not n.strip().isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"{item!r}: expected SERVICE=N with N a whole number ≥ 1, e.g. stt=2")
    return name.strip(), int(n)


def cmd_up(args: argparse.Namespace) -> int:
    from switchboard import logs
    from switchboard.stack import Stack

    logs.setup("up")
    settings = load_settings(ServiceSettings, "switchboard up")
    embedded = "SWITCHBOARD_KAFKA_BOOTSTRAP" not in os.environ
    # tied_to_parent: the broker and the workers die with `up`, even when it is killed with SIGKILL
    try:  # an unknown service, or more ingress nodes than reply partitions
        stack = Stack(settings, ingress_port=args.port, broker_port=args.broker_port, scale=dict(args.scale),
                      run_dir=args.run_dir, tied_to_parent=True)
        if embedded:
            stack.one_box()
    except ValueError as exc:
        print(f"switchboard up: {exc}", file=sys.stderr)
        return 2
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start(embedded)
        stack.wait_ready()
        softphone = stack.client_credentials.softphone_url(stack.http_base)
        print(
            f"Switchboard is up: {softphone}  (Kafka {stack.bootstrap}; logs in "
            f"{stack.run_dir / 'logs'}). Ctrl-C stops it.",
            flush=True,
        )
        if stack.auth:
            print(f"Credentials (Twilio auth token, API keys, metrics token): {stack.run_dir / 'credentials.json'} "
                  "(mode 600); `switchboard call` and `demo` use them.", flush=True)
        else:
            print("WARNING: SWITCHBOARD_AUTH=off: every entry point lets anyone in.", file=sys.stderr, flush=True)
        while not stop:  # supervise: a dead broker or worker is started again at once
            try:
                for restarted in stack.supervise():
                    print(f"restarted {restarted}", file=sys.stderr, flush=True)
            except Exception as exc:  # e.g. the broker's port still taken: say so, try again next round
                print(f"supervision: {type(exc).__name__}: {exc}; retrying", file=sys.stderr, flush=True)
                time.sleep(1)
            time.sleep(0.1)
    finally:
        print("stopping…", flush=True)
        stack.stop()
    return 0


def _utterances(args: argparse.Namespace) -> list[Any]:
    from switchboard.audio import BUS_RATE, read_wav, resample
    from switchboard.caller import Utterance

    out = []
    for path in args.audio or []:
        samples, rate = read_wav(path)
        out.append(Utterance(resample(samples, rate, BUS_RATE), Path(path).name))
    if args.say:
        from processors.tts.piper import PiperEngine

        piper = PiperEngine()
        for text in args.say:
            out.append(Utterance(piper._synthesize(text), text))
    return out


def print_call(result: Any, utterances: list[Any]) -> None:
    print(f"call {result.call_id}")
    for seq in sorted(set(result.replies) | set(result.transcripts)):
        if seq in result.transcripts:
            print(f"  caller  [{seq}] {result.transcripts[seq]}")
        if seq in result.replies:
            print(f"  agent   [{seq}] {' '.join(result.replies[seq])}")
    print("  latency per turn (ms): response = end of speech → first agent audio; processing = turn detected → it")
    print(f"  {'turn':>4} {'response':>9} {'process':>8} {'stt':>6} {'agent':>6} {'tts':>6} {'bus':>6}")
    for seq, lat in sorted(result.latencies.items()):
        cells = [lat.response_ms, lat.processing_ms, lat.stt_ms, lat.agent_ms, lat.tts_ms, lat.bus_overhead_ms]
        print(
            f"  {seq:>4} "
            + " ".join(
                f"{c:>{w}.0f}" if c is not None else f"{'-':>{w}}"
                for c, w in zip(cells, (9, 8, 6, 6, 6, 6), strict=True)
            )
        )
    if result.clears:
        print(f"  playback cleared {result.clears} time(s) (barge-in)")


async def _call(args: argparse.Namespace) -> Any:
    from switchboard.audio import write_wav
    from switchboard.caller import TwilioCaller
    from switchboard.credentials import ClientCredentials

    settings = ServiceSettings()
    utterances = _utterances(args)
    caller = TwilioCaller(args.url, settings, credentials=ClientCredentials.load(args.run_dir))
    result = await caller.run(utterances, wait_greeting=not args.barge_in, timeout_s=args.timeout)
    print_call(result, utterances)
    if args.save:
        write_wav(args.save, result.agent_wav(), 8000)
        print(f"  agent audio saved to {args.save}")
    return result


def cmd_call(args: argparse.Namespace) -> int:
    if not args.audio and not args.say:
        print("give --audio FILE or --say TEXT", file=sys.stderr)
        return 2
    import httpx
    from aiokafka.errors import KafkaConnectionError

    from switchboard.twilio_client import WebhookRefused

    try:
        asyncio.run(_call(args))
    except WebhookRefused as exc:  # e.g. no or stale credentials: say so, no traceback
        print(f"the ingress refused the call: {exc}. Credentials come from SWITCHBOARD_TWILIO_AUTH_TOKEN or the "
              f"credentials.json `switchboard up` wrote in {args.run_dir}.", file=sys.stderr)
        return 1
    except (OSError, httpx.HTTPError) as exc:
        print(f"cannot reach the ingress at {args.url}: {exc}", file=sys.stderr)
        return 1
    except KafkaConnectionError as exc:  # the call reads its transcripts and latencies from the stack's Kafka
        print(f"cannot reach Kafka at {ServiceSettings().kafka_bootstrap} ({exc}): set SWITCHBOARD_KAFKA_BOOTSTRAP "
              "to the stack's broker (`switchboard up` prints it)", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from switchboard.demo import run_demo

    return run_demo(args)


def cmd_topics(args: argparse.Namespace) -> int:
    from switchboard.bus import create_topics
    from switchboard.topics import CATALOG

    settings = ServiceSettings()
    if args.action == "create":
        created = asyncio.run(create_topics(settings))
        print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")
    else:
        for t in CATALOG:
            print(
                f"{settings.topic_prefix}{t.name:<14} {settings.partitions:>3} partitions  key={t.key:<10} "
                f"{'compacted' if t.compacted else f'retention {t.retention_ms // 3_600_000} h'}  {t.doc}"
            )
    return 0


def _service_runner(module: str):
    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).main(args.rest) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Switchboard: a Kafka-native real-time voice agent pipeline for call centers. "
        "Settings come from SWITCHBOARD_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "up",
        help="run the whole pipeline on this machine",
        description="Start the embedded Kafka (tansu) unless SWITCHBOARD_KAFKA_BOOTSTRAP is set, create "
        "the topics, and run the ingress and every processor as separate processes until Ctrl-C.",
    )
    p.add_argument("--port", type=int, default=8080, help="ingress port (default 8080)")
    p.add_argument("--broker-port", type=int, default=9092, help="embedded Kafka port (default 9092)")
    p.add_argument("--scale", action="append", default=[], type=_scale_item, metavar="SERVICE=N",
                   help="run N copies, e.g. stt=2 (they share the partitions); ingress=N runs N ingress processes "
                   "on the one port (SO_REUSEPORT), each a node with its own reply partitions and metrics port")
    p.add_argument("--run-dir", type=Path, default=ROOT / ".switchboard",
                   help="where logs, credentials.json, the broker's pid file and the workers' member IDs are kept")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "call",
        help="a simulated phone call over the Twilio protocol",
        description="Call the ingress like Twilio would: play each WAV (or Piper-spoken sentence) in "
        "real time as 20 ms μ-law frames, wait for the agent's answer, and print what the pipeline "
        "heard and said with each turn's latencies. Needs the stack running (switchboard up); signs in with "
        "the credentials `up` keeps in .switchboard/credentials.json, or SWITCHBOARD_TWILIO_AUTH_TOKEN.",
    )
    p.add_argument("--audio", action="append", metavar="WAV", help="an utterance to play (repeatable)")
    p.add_argument("--say", action="append", metavar="TEXT", help="an utterance spoken by Piper (repeatable)")
    p.add_argument("--url", default="ws://127.0.0.1:8080/twilio/media", help="ingress media-stream URL")
    p.add_argument("--run-dir", type=Path, default=ROOT / ".switchboard",
                   help="where `switchboard up` keeps credentials.json (SWITCHBOARD_* variables take precedence)")
    p.add_argument("--save", metavar="WAV", help="save the agent's audio (8 kHz) here")
    p.add_argument("--barge-in", action="store_true", help="start speaking during the greeting")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for each reply")
    p.set_defaults(func=cmd_call)

    p = sub.add_parser(
        "demo",
        help="start the stack, make demo calls, print the results, stop",
        description="The main job: the whole pipeline on the embedded default, a scripted appointment "
        "call and one call per clip in ../shared/audio, with transcripts, word error and latencies.",
    )
    p.add_argument(
        "--audio-dir", type=Path, default=DEFAULT_AUDIO_DIR, help="folder of WAV clips with .txt transcripts"
    )
    p.add_argument("--out", type=Path, default=ROOT / ".switchboard" / "demo", help="where to save the agent audio")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "topics",
        help="create or list the Kafka topics",
        description="Create (idempotent) or list the topics of the catalog on SWITCHBOARD_KAFKA_BOOTSTRAP.",
    )
    p.add_argument("action", choices=["create", "list"])
    p.set_defaults(func=cmd_topics)

    for service in SERVICES:
        p = sub.add_parser(
            service.name, help=f"run one {service.name} worker: {service.doc}", add_help=False, description=service.doc
        )
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_service_runner(service.module))

    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
