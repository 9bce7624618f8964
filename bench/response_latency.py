"""Response latency, one call at a time: where the time goes from the caller's last word to the agent's first.

Starts its own tansu and the spine services (ingress, turns, stt, agent, tts) on free loopback ports
(credentials in a temporary directory; nothing of ``.switchboard/`` is touched), then, one call at a
time over the Twilio protocol: one call per clip of ``../shared/audio`` (real speech), and the demo's
scripted booking (five short answers spoken by Piper). Prints response and processing latency
p50/p95 over every answered turn, and each step: the silence waited for the turn to be detected
(and why it ended), the early transcript and the end-of-turn verdict counted from the pause, the
final transcript (reused from the early one or decoded), the agent, TTS and the bus.

    .venv/bin/python bench/response_latency.py                  # early transcripts + Smart Turn (default)
    .venv/bin/python bench/response_latency.py --fixed-silence  # as before: 700 ms of silence, decode at the end
    .venv/bin/python bench/response_latency.py --rounds 3 --json /tmp/latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from switchboard.audio import BUS_RATE, read_wav, resample
from switchboard.broker import EmbeddedBroker, listen_port
from switchboard.caller import TwilioCaller, Utterance
from switchboard.demo import SCRIPT
from switchboard.latency import turn_steps
from switchboard.records import TurnLatency
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack

SPINE = ("ingress", "turns", "stt", "agent", "tts")
CLIPS = Path(__file__).resolve().parents[2] / "shared" / "audio"
# No pause is ever reached and Smart Turn is off: a turn ends after SWITCHBOARD_END_OF_TURN_MS of silence
# and STT decodes it then, which is how every turn ended before early transcripts.
FIXED_SILENCE = {"SWITCHBOARD_PAUSE_MS": "600000", "SWITCHBOARD_SMART_TURN": "false"}
STEPS = ("response", "processing", "silence", "early", "decision", "stt", "agent", "tts", "bus")


@contextlib.contextmanager
def stack(env: dict[str, str]) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="switchboard-latency-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "tansu.log").start()
        settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"lat{uuid.uuid4().hex[:6]}.")
        s = Stack(settings, ingress_port=listen_port(), run_dir=Path(tmp), only=SPINE, extra_env=env)
        s._next_metrics_port = listen_port()
        try:
            s.start(embedded=False)
            s.wait_ready()
            yield s
        finally:
            s.stop()
            broker.stop()


def calls() -> list[tuple[str, list[Utterance]]]:
    """(label, utterances) of each call: the clips, then the scripted booking."""
    out = []
    for clip in sorted(CLIPS.glob("*.wav")):
        samples, rate = read_wav(clip)
        out.append((clip.name, [Utterance(resample(samples, rate, BUS_RATE), clip.name)]))
    from processors.tts.piper import PiperEngine

    piper = PiperEngine()
    out.append(("booking", [Utterance(piper._synthesize(line), line) for line in SCRIPT]))
    return out


async def measure(s: Stack, rounds: int) -> list[TurnLatency]:
    settings = s.settings.model_copy(update={"kafka_bootstrap": s.bootstrap})
    url = f"ws://127.0.0.1:{s.ingress_port}/twilio/media"
    script = calls()
    latencies: list[TurnLatency] = []
    for r in range(rounds):
        for label, utterances in script:
            result = await TwilioCaller(url, settings, credentials=s.client_credentials).run(utterances)
            turns = [lat for seq, lat in sorted(result.latencies.items()) if seq > 0]
            latencies += turns
            shown = ", ".join(f"{lat.response_ms:.0f}" for lat in turns if lat.response_ms is not None)
            print(f"round {r + 1} {label}: response ms {shown or '-'}", flush=True)
    return latencies


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(latencies: list[TurnLatency]) -> dict[str, object]:
    steps = [turn_steps(lat) for lat in latencies]
    table: dict[str, object] = {}
    for name in STEPS:
        values = [float(x[name]) for x in steps if isinstance(x[name], float)]  # type: ignore[arg-type]
        table[name] = {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
                       "max": max(values) if values else float("nan")}
    table["end_reasons"] = dict(Counter(str(x["reason"]).split(":")[0] for x in steps))
    table["stt_final"] = dict(Counter(str(x["stt_how"]) for x in steps))
    table["turns"] = len(latencies)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="times each call is made (default 2)")
    parser.add_argument("--fixed-silence", action="store_true",
                        help="the baseline: no early transcript, no Smart Turn; turns end after 700 ms of silence")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    env = FIXED_SILENCE if args.fixed_silence else {}
    with stack(env) as s:
        print(f"stack up on {s.http_base} ({'fixed silence' if args.fixed_silence else 'early + Smart Turn'})",
              flush=True)
        latencies = asyncio.run(measure(s, args.rounds))
    table = summarise(latencies)
    print(f"\n{table['turns']} answered turns; ended by {table['end_reasons']}; final transcript {table['stt_final']}")
    print(f"{'step (ms)':<12} {'n':>3} {'p50':>7} {'p95':>7} {'max':>7}")
    for name in STEPS:
        row = table[name]
        assert isinstance(row, dict)
        print(f"{name:<12} {row['n']:>3} {row['p50']:>7.0f} {row['p95']:>7.0f} {row['max']:>7.0f}")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    medians = [lat.response_ms for lat in latencies if lat.response_ms is not None]
    return 0 if medians and statistics.median(medians) > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
