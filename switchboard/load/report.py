"""What a load run measured: percentiles, the JSON result, the text summary, and the baseline check.

Regression thresholds of ``--baseline`` (documented in the README's "Load testing"):

- response, greeting or barge-in p95 more than 25 % above the baseline's (and more than 50 ms,
  so a few milliseconds of noise on a small figure never fail a run);
- any lost frame (whatever the baseline says: a lost frame is a bug);
- the share of callers answered more than 5 points below the baseline's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from switchboard.load.caller import CallRecord

FORMAT = 1
LATENCY_P95_REL = 0.25
LATENCY_FLOOR_S = 0.05
ANSWERED_DROP = 0.05
LATENCIES = ("response", "greeting", "barge_in")


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p95, p99 and max in seconds (linear interpolation; None without samples)."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    arr = np.asarray(values, dtype=float)
    p50, p95, p99 = (round(float(x), 4) for x in np.percentile(arr, [50, 95, 99]))
    return {"count": len(values), "p50": p50, "p95": p95, "p99": p99, "max": round(float(arr.max()), 4)}


def samples(records: Sequence[CallRecord]) -> dict[str, list[tuple[float, float]]]:
    """Every latency sample as (seconds since the run started, latency)."""
    return {
        "greeting": [(r.started_t or 0.0, r.greeting_s) for r in records if r.greeting_s is not None],
        "response": [s for r in records for s in r.responses],
        "barge_in": [s for r in records for s in r.barge_ins],
        "connect": [(r.started_t or 0.0, r.connect_s) for r in records if r.connect_s is not None],
    }


def active_at(records: Sequence[CallRecord], t: float) -> int:
    """Calls with an open stream at ``t`` (seconds since the run started)."""
    return sum(1 for r in records if r.started_t is not None and r.started_t <= t and (r.ended_t or math.inf) > t)


def summarize(
    records: Sequence[CallRecord],
    config: dict[str, Any],
    *,
    frames_consumed: float | None,
    frames_method: str,
    cpu: dict[str, dict[str, float | int]] | None,
    wall_s: float,
    timeline: list[dict[str, float]],
) -> dict[str, Any]:
    admitted = [r for r in records if r.admitted]
    sent = sum(r.frames_sent for r in admitted)
    lost = None if frames_consumed is None else max(0, sent - int(frames_consumed))
    errors: dict[str, int] = {}
    for r in records:
        for e in r.errors():
            key = e.split(":")[0]
            errors[key] = errors.get(key, 0) + 1
    call_s = sum((wall_s if r.ended_t is None else r.ended_t) - (r.started_t or 0.0) for r in admitted)
    cpu_out = None
    if cpu:
        cpu_out = {
            name: {**row, "per_call_second": round(float(row["cpu_s"]) / call_s, 5) if call_s else None,
                   "share_of_a_core": round(float(row["cpu_s"]) / wall_s, 3) if wall_s else None}
            for name, row in cpu.items()
        }
    by_kind = samples(records)
    summary = {
        "callers": len(records),
        "admitted": len(admitted),
        "answered": sum(1 for r in records if r.answered),
        "answered_ratio": round(sum(1 for r in records if r.answered) / len(records), 4) if records else 0.0,
        "peak_concurrent": max((int(p["active"]) for p in timeline), default=0),
        "turns_spoken": sum(r.turns_spoken for r in records),
        "turns_answered": sum(r.turns_answered for r in records),
        "early_answers": sum(r.early_answers for r in records),
        "fillers": sum(r.fillers for r in records),
        "latency_s": {k: percentiles([v for _, v in by_kind[k]]) for k in (*LATENCIES, "connect")},
        "frames": {"sent": sent, "consumed": None if frames_consumed is None else int(frames_consumed),
                   "lost": lost, "method": frames_method},
        "errors": errors,
        "generator_max_lag_s": round(max((r.max_lag_s for r in records), default=0.0), 4),
        "call_seconds": round(call_s, 1),
        "wall_s": round(wall_s, 2),
        "cpu": cpu_out,
    }
    return {
        "format": FORMAT,
        "config": config,
        "summary": summary,
        "timeline": timeline,
        "calls": [asdict(r) for r in records],
    }


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))


def load_json(path: Path) -> dict[str, Any]:
    """A result written by ``write_json``; ValueError with a plain reason otherwise."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read baseline {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "summary" not in data:
        raise ValueError(f"{path} is not a switchboard load result (format {FORMAT})")
    return data


def compare(current: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Regressions of ``current`` against ``baseline`` (both results), as sentences; empty: none."""
    cur, base = current["summary"], baseline["summary"]
    found = []
    for kind in LATENCIES:
        now, then = cur["latency_s"][kind]["p95"], base["latency_s"][kind]["p95"]
        if now is not None and then is not None and now > then * (1 + LATENCY_P95_REL) and now - then > LATENCY_FLOOR_S:
            found.append(f"{kind} p95 {now * 1000:.0f} ms vs baseline {then * 1000:.0f} ms "
                         f"(+{(now / then - 1) * 100 if then else math.inf:.0f} %, limit +{LATENCY_P95_REL:.0%})")
    lost = cur["frames"]["lost"]
    if lost:
        found.append(f"{lost} caller frame(s) lost (limit 0)")
    if cur["answered_ratio"] < base["answered_ratio"] - ANSWERED_DROP:
        found.append(f"answered {cur['answered_ratio']:.1%} of callers vs baseline {base['answered_ratio']:.1%} "
                     f"(limit -{ANSWERED_DROP * 100:.0f} points)")
    return found


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def text(result: dict[str, Any]) -> str:
    """The summary for a terminal."""
    s, c = result["summary"], result["config"]
    mode = "silent" if c.get("silent") else f"{c.get('turns')} turn(s) of real speech"
    lines = [
        f"{s['callers']} callers ({mode}), ramp {c.get('ramp')} s, cap {c.get('duration')} s: "
        f"{s['answered']} answered ({s['answered_ratio']:.0%}), {s['admitted']} admitted, "
        f"peak {s['peak_concurrent']} concurrent, {s['turns_answered']}/{s['turns_spoken']} turns answered",
        f"{'latency (ms)':<14} {'n':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}",
    ]
    for kind in (*LATENCIES, "connect"):
        p = s["latency_s"][kind]
        lines.append(f"{kind:<14} {p['count']:>6} {_ms(p['p50']):>7} {_ms(p['p95']):>7} {_ms(p['p99']):>7} "
                     f"{_ms(p['max']):>7}")
    if s.get("early_answers"):
        lines.append(f"{s['early_answers']} turn(s) answered while the caller was still speaking (the turn was "
                     "ended at a pause inside the utterance; no response latency sampled for them)")
    if s.get("fillers"):
        lines.append(f"{s['fillers']} filler(s) heard (\"One moment, please.\": an answer was late; its response "
                     "latency runs to the answer after the filler)")
    f = s["frames"]
    lines.append(f"frames: sent {f['sent']}, consumed {f['consumed'] if f['consumed'] is not None else '?'}, "
                 f"lost {f['lost'] if f['lost'] is not None else '? (' + f['method'] + ')'}")
    lines.append("errors: " + (", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "none"))
    if s.get("ingress_bad_input"):
        lines.append("the ingress counted bad input: " + ", ".join(f"{k} {v}" for k, v in
                                                                  sorted(s["ingress_bad_input"].items())))
    if s["errors"].get("rejected"):
        lines.append("hint: the ingress refused calls (1013): over SWITCHBOARD_MAX_CALLS, or over the per-source "
                     "limits (SWITCHBOARD_MAX_CALLS_PER_SOURCE, SWITCHBOARD_CALL_STARTS_PER_SOURCE_PER_MINUTE); "
                     "exempt the generator with SWITCHBOARD_SOURCE_LIMIT_EXEMPT=127.0.0.1 on a load-test stack")
    if s["generator_max_lag_s"] > 0:
        lines.append(f"warning: the load generator fell up to {s['generator_max_lag_s'] * 1000:.0f} ms behind "
                     "its schedule (this machine is saturated; frames were delayed, never dropped)")
    m = c.get("machine")
    if m:
        lines.append(f"machine: {m['cpus']} CPUs, load average {m['loadavg_1m_before']} before, "
                     f"{m['loadavg_1m_after']} after (other work on a shared machine slows every figure)")
    if s["cpu"]:
        lines.append(f"CPU over {s['wall_s']:.0f} s ({s['call_seconds']:.0f} call-seconds):")
        for name, row in sorted(s["cpu"].items(), key=lambda kv: -float(kv[1]["cpu_s"])):
            per = row["per_call_second"]
            share = "-" if row["share_of_a_core"] is None else f"{row['share_of_a_core']:.0%}"
            lines.append(f"  {name:<15} {row['cpu_s']:>7.1f} s  {share:>5} of a core  "
                         f"{'-' if per is None else f'{per * 1000:.1f} ms'} per call-second")
    return "\n".join(lines)
