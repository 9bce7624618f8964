"""Response latency, one call at a time: where the time goes from the caller's last word to the agent's first.

Starts its own tansu and the spine services (ingress, turns, stt, agent, tts) on free loopback ports
(credentials in a temporary directory; nothing of ``.switchboard/`` is touched), then, one call at a
time over the Twilio protocol: one call per clip of ``../shared/audio`` (real speech), and the demo's
scripted booking (five short answers spoken by Piper). Prints response and processing latency
p50/p95 over every answered turn, and each step: the silence waited for the turn to be detected
(and why it ended), the early transcript and the end-of-turn verdict counted from the pause, the
final transcript (reused from the early one or decoded), the agent, TTS and the bus; and how many replies were
speculative (made on the early transcript, played once the turn was confirmed) or discarded.

    .venv/bin/python bench/response_latency.py                  # early transcripts + Smart Turn, speculation on
    .venv/bin/python bench/response_latency.py --speculation both  # the same calls with speculation off, then on
    .venv/bin/python bench/response_latency.py --fixed-silence  # as before: 700 ms of silence, decode at the end
    .venv/bin/python bench/response_latency.py --rounds 3 --json /tmp/latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
from collections import Counter
from pathlib import Path

import numpy as np

from switchboard.audio import BUS_RATE, read_wav, resample
from switchboard.caller import TwilioCaller, Utterance
from switchboard.demo import SCRIPT
from switchboard.latency import turn_steps
from switchboard.records import TurnLatency
from switchboard.stack import Stack, scratch_stack

SPINE = ("ingress", "turns", "stt", "agent", "tts")
CLIPS = Path(__file__).resolve().parents[2] / "shared" / "audio"
# No pause is ever reached and Smart Turn is off: a turn ends after SWITCHBOARD_END_OF_TURN_MS of silence
# and STT decodes it then, which is how every turn ended before early transcripts.
FIXED_SILENCE = {"SWITCHBOARD_PAUSE_MS": "600000", "SWITCHBOARD_SMART_TURN": "false"}
STEPS = ("response", "processing", "silence", "early", "decision", "stt", "agent", "tts", "bus")
SPECULATION = {"on": "offline", "off": "off"}  # SWITCHBOARD_SPECULATIVE_REPLY for --speculation (offline policy)


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


async def measure(stacks: dict[str, Stack], rounds: int) -> dict[str, list[TurnLatency]]:
    """Each call on each stack in turn (one call at a time): with two stacks (speculation off and on) the calls
    alternate, so both see the same load on a shared box, and which goes first alternates too (the second of a pair
    runs while the first one's stack still winds its call down)."""
    script = calls()
    latencies: dict[str, list[TurnLatency]] = {mode: [] for mode in stacks}
    pairs = 0
    for r in range(rounds):
        for label, utterances in script:
            pairs += 1
            order = list(stacks.items()) if pairs % 2 else list(reversed(stacks.items()))
            for mode, s in order:
                settings = s.settings.model_copy(update={"kafka_bootstrap": s.bootstrap})
                url = f"ws://127.0.0.1:{s.ingress_port}/twilio/media"
                result = await TwilioCaller(url, settings, credentials=s.client_credentials).run(utterances)
                turns = [lat for seq, lat in sorted(result.latencies.items()) if seq > 0]
                latencies[mode] += turns
                shown = ", ".join(f"{lat.response_ms:.0f}" for lat in turns if lat.response_ms is not None)
                print(f"round {r + 1} {label} (speculation {mode}): response ms {shown or '-'}", flush=True)
                for lat in turns:  # why each turn ended when it did: the lever for the silence waited
                    heard = result.transcripts.get(lat.turn_seq, "")
                    print(f"    turn {lat.turn_seq}: {lat.timings.end_reason or '-'}, silence "
                          f"{lat.turn_detection_ms or 0:.0f} ms, early {lat.early_ms or 0:.0f} ms: {heard!r}",
                          flush=True)
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
    table["reply"] = dict(Counter(str(x["reply"] or "made at the end") for x in steps))
    table["turns"] = len(latencies)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="times each call is made (default 2)")
    parser.add_argument("--fixed-silence", action="store_true",
                        help="the baseline: no early transcript, no Smart Turn; turns end after 700 ms of silence")
    parser.add_argument("--speculation", choices=("on", "off", "both"), default="on",
                        help="the agent's speculative reply (SWITCHBOARD_SPECULATIVE_REPLY); both: two stacks, "
                        "each call made on one then the other")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    tables: dict[str, dict[str, object]] = {}
    with contextlib.ExitStack() as started:
        stacks: dict[str, Stack] = {}
        for mode in ("off", "on") if args.speculation == "both" else (args.speculation,):
            env = {**(FIXED_SILENCE if args.fixed_silence else {}), "SWITCHBOARD_SPECULATIVE_REPLY": SPECULATION[mode]}
            s = stacks[mode] = started.enter_context(scratch_stack("latency", SPINE, env))
            how = "fixed silence" if args.fixed_silence else "early + Smart Turn"
            print(f"stack up on {s.http_base} ({how}, speculation {mode})", flush=True)
        by_mode = asyncio.run(measure(stacks, args.rounds))
    for mode, latencies in by_mode.items():
        table = tables[f"speculation {mode}"] = summarise(latencies)
        print(f"\n{table['turns']} answered turns (speculation {mode}); ended by {table['end_reasons']}; "
              f"final transcript {table['stt_final']}; reply {table['reply']}")
        print(f"{'step (ms)':<12} {'n':>3} {'p50':>7} {'p95':>7} {'max':>7}")
        for name in STEPS:
            row = table[name]
            assert isinstance(row, dict)
            print(f"{name:<12} {row['n']:>3} {row['p50']:>7.0f} {row['p95']:>7.0f} {row['max']:>7.0f}")
    if len(tables) > 1:
        print(f"\n{'':<16} {'response p50':>12} {'p95':>6} {'processing p50':>15} {'p95':>6}")
        for label, table in tables.items():
            r, p = table["response"], table["processing"]
            assert isinstance(r, dict) and isinstance(p, dict)
            print(f"{label:<16} {r['p50']:>12.0f} {r['p95']:>6.0f} {p['p50']:>15.0f} {p['p95']:>6.0f}")
    if args.json:
        args.json.write_text(json.dumps(tables if len(tables) > 1 else next(iter(tables.values())), indent=2))
    medians = [lat.response_ms for lats in by_mode.values() for lat in lats if lat.response_ms is not None]
    return 0 if medians and statistics.median(medians) > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
