"""Benchmark: time to a sentence's first agent audio on the TTS side, whole-sentence vs first-clause synthesis.

    .venv/bin/python bench/tts_first_audio.py [--rounds 3] [--calls 1] [--json out.json]

The sentences are the ones the offline policy says that are not in the phrase cache (its templates
with a caller's day and time: confirmations, "What time on ... works best for you?"), found by
running processors/agent/policy.py over its conversation paths with several days and times, plus a
few long free-form sentences of the kind an LLM agent says. (The policy's fixed sentences play from
the phrase cache in both modes: their first audio is the time to look them up.)

Each sentence goes through the TTS processor's logic (``Synthesizer.handle``) and the inference pool
it uses (``SWITCHBOARD_INFERENCE_THREADS``, 0 = one thread per core), in two modes built as
``switchboard tts`` builds them:

- **whole**: Piper makes each sentence whole (as with ``SWITCHBOARD_TTS_FIRST_CLAUSE=false``);
- **first clause**: the default: a sentence's first clause alone, then the rest while it plays,
  openers from the phrase cache (warmed first, as at start-up).

Reported per mode and group: time to first audio (handle called → first ``audio.out`` record
yielded) and total synthesis time (→ last record), p50/p95/max over every pass; the same for the
first audio taking each sentence's fastest pass (closest to an otherwise idle box: the machine is
shared, so load average is printed too); the CPU time this process spent until then (p50; it includes
onnxruntime's spinning worker threads, so it exceeds the model's own compute); and how many
sentences would play with a gap (a record yielded later than the audio before it takes to play,
counted from the first record). ``--calls N`` runs N calls' sentences at once (contention for
the pool); the default 1 is one call alone on the box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processors.agent.policy import ClinicPolicy
from processors.tts.engine import TextToSpeech
from processors.tts.first_clause import FirstClauseTts
from processors.tts.logic import Synthesizer
from processors.tts.phrase_cache import CLAUSE_PHRASES, DEFAULT_PHRASES, CachedTts, PhraseCache
from processors.tts.piper import FIXED_GAIN, PiperEngine
from switchboard import inference
from switchboard.audio import BUS_RATE
from switchboard.bus import Correlation
from switchboard.records import AgentReply, AudioOut, DialogState, ReplyKind, Timings
from switchboard.runner import Incoming
from switchboard.settings import ServiceSettings
from switchboard.topics import REPLIES

DAYS = ("Monday", "Thursday", "Saturday", "tomorrow")
TIMES = ("10 AM", "3:30 PM", "12 PM", "9:15 AM")
PATHS = (  # conversation paths that reach every templated sentence of the policy
    ("book an appointment", "{day}", "{time}", "yes"),
    ("I need to reschedule", "{day} at {time}", "yes"),
    ("cancel my appointment", "{day}", "yes"),
)
FREE_FORM = (
    "Sure, I can help you with that, let me just pull up the diary for next week.",
    "I'm sorry to hear that, we can certainly find you an earlier appointment with Doctor Patel.",
    "Your appointment is with the hygienist on the second floor, so please check in at the front desk first.",
    "Okay, I've found three openings on Tuesday afternoon: at one, at half past two and at four.",
    "Before I book that, could you tell me your date of birth and the first line of your address?",
    "The clinic is closed on public holidays, but the out-of-hours line can always put you through to a nurse.",
)


def _state() -> DialogState:
    return DialogState("bench", "greeting", 0, 0, 0, "en-US", False, 0)


async def policy_sentences() -> list[str]:
    """Every sentence the offline policy says on PATHS that the phrase cache does not hold whole."""
    cached, out = {p.lower() for p in DEFAULT_PHRASES}, []
    for day, hour in zip(DAYS, TIMES, strict=True):
        for path in PATHS:
            policy, state = ClinicPolicy(), _state()
            lines = [s async for s in policy.greet(state)]
            for text in path:
                lines += [s async for s in policy.respond(state, text.format(day=day, time=hour))]
            out += [s for s in lines if s.lower() not in cached and s not in out]
    return out


def _reply(call_id: str, turn: int, text: str) -> Incoming:
    r = AgentReply(call_id, turn, 0, ReplyKind.SENTENCE, text, 0, "policy", 0, timings=Timings())
    return Incoming(r, Correlation(call_id=call_id), REPLIES, 0, turn, 0)


async def one(tts: Synthesizer, call_id: str, turn: int, text: str) -> dict[str, Any]:
    """Time to first and last audio record of one sentence, and whether its audio would play without a gap."""
    start, cpu_start = time.perf_counter(), time.process_time()
    first = last = None
    cpu_first = 0.0
    due = 0.0  # when the next record must be there for gapless playback, counted from the first record
    late = False
    async for out in tts.handle(_reply(call_id, turn, text)):
        if not isinstance(out.record, AudioOut):
            continue
        now = time.perf_counter()
        if first is None:
            first, cpu_first = now, time.process_time()
        elif now - first > due:
            late = True
        due += len(out.record.pcm) / 2 / BUS_RATE
        last = now
    assert first is not None and last is not None, f"no audio for {text!r}"
    return {
        "first_ms": (first - start) * 1000,
        "total_ms": (last - start) * 1000,
        "cpu_first_ms": (cpu_first - cpu_start) * 1000,
        "cpu_total_ms": (time.process_time() - cpu_start) * 1000,
        "gap": float(late),
        "text": text,
    }


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1), "max": round(ordered[-1], 1)}


def _best_of_rounds(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Per sentence the fastest of its rounds (the box at its quietest), then p50/p95/max over the sentences."""
    best: dict[str, float] = {}
    for r in rows:
        best[r["text"]] = min(best.get(r["text"], float("inf")), r[key])
    return _summary(list(best.values()))


async def run_modes(
    engines: dict[str, TextToSpeech], groups: dict[str, list[str]], rounds: int, calls: int
) -> dict[str, dict[str, object]]:
    """Each sentence through every mode in turn (so a change in the box's load hits both modes alike)."""
    processors = {mode: Synthesizer(engine) for mode, engine in engines.items()}
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    turn = 0
    for group, sentences in groups.items():
        for _ in range(rounds):
            for text in sentences:
                for mode, tts in processors.items():
                    turn += 1
                    done = await asyncio.gather(*(one(tts, f"call{c}", turn, text) for c in range(calls)))
                    rows.setdefault((mode, group), []).extend(done)
    return {
        mode: {
            group: {
                "sentences": len(r),
                "first_audio_ms": _summary([x["first_ms"] for x in r]),
                "first_audio_best_of_rounds_ms": _best_of_rounds(r, "first_ms"),
                "total_ms": _summary([x["total_ms"] for x in r]),
                "cpu_first_ms": _summary([x["cpu_first_ms"] for x in r]),
                "cpu_total_ms": _summary([x["cpu_total_ms"] for x in r]),
                "with_a_gap": int(sum(x["gap"] for x in r)),
            }
            for (m, group), r in rows.items()
            if m == mode
        }
        for mode in engines
    }


async def main(rounds: int, calls: int) -> dict[str, object]:
    inference.configure(ServiceSettings().inference_threads)  # the pool the processor uses, sized as it is
    piper = PiperEngine(gain=FIXED_GAIN)
    cache = PhraseCache([*DEFAULT_PHRASES, *CLAUSE_PHRASES])
    await cache.warm(piper, None)  # as at start-up
    groups = {"policy templates": await policy_sentences(), "free-form": list(FREE_FORM)}
    cached = CachedTts(piper, cache)
    engines: dict[str, TextToSpeech] = {"whole": cached, "first clause": FirstClauseTts(cached)}
    await run_modes(engines, {"warm-up": list(FREE_FORM[:2])}, 1, 1)
    load_before = os.getloadavg()[0]
    report: dict[str, object] = {"pool_threads": inference.threads(), "calls_at_once": calls, "sentences": groups}
    report.update(await run_modes(engines, groups, rounds, calls))
    report["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    return report


def _print(report: dict[str, object]) -> None:
    print(f"inference pool: {report['pool_threads']} threads; calls at once: {report['calls_at_once']}; "
          f"load average (1 min) before/after: {report['load_average'][0]} / {report['load_average'][1]}")
    for group, sentences in report["sentences"].items():  # type: ignore[union-attr]
        print(f"\n{group} ({len(sentences)}):")
        for s in sentences:
            print(f"  {s}")
    print(f"\n{'mode':<13} {'group':<17} {'n':>3}  {'first audio p50/p95/max ms':>27}  "
          f"{'best of rounds p50/p95/max':>27}  {'total p50/p95/max ms':>22}  {'CPU first/all p50':>17}  gaps")
    for mode in ("whole", "first clause"):
        for group, r in report[mode].items():  # type: ignore[union-attr]
            f, t, cf, ct = r["first_audio_ms"], r["total_ms"], r["cpu_first_ms"], r["cpu_total_ms"]
            b = r["first_audio_best_of_rounds_ms"]
            print(f"{mode:<13} {group:<17} {r['sentences']:>3}  {f['p50']:>9} / {f['p95']:>6} / {f['max']:>6}  "
                  f"{b['p50']:>9} / {b['p95']:>6} / {b['max']:>6}  "
                  f"{t['p50']:>7} / {t['p95']:>6} / {t['max']:>6}  {cf['p50']:>8} / {ct['p50']:>6}  "
                  f"{r['with_a_gap']:>4}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="passes over the sentences (default 3)")
    ap.add_argument("--calls", type=int, default=1, help="calls synthesising at once (default 1)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    result = asyncio.run(main(max(1, args.rounds), max(1, min(args.calls, 8))))
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
