"""`bench/load_stack.py` plus the `audio.in` bus hop: a load run on a fresh load-test stack, and the turns
worker's ``switchboard_bus_hop_seconds{service="turns",topic="audio.in"}`` over the run (p50/p95/p99 interpolated in
its buckets), the ingress's send-path drops, and the caller audio records and frames the turns worker consumed; then
the ingress's event-loop lag and call-admission steps over the run (``switchboard_event_loop_lag_seconds``,
``switchboard_call_start_step_seconds``: where a connect waits under a burst of call starts).

    SWITCHBOARD_AUDIO_RECORD_MS=60 .venv/bin/python bench/load_hop.py --callers 500 --ramp 20 --duration 80 --silent
    .venv/bin/python bench/load_hop.py --ingress-nodes 2 --callers 200 --ramp 10 --duration 30 --silent
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import urllib.request

from load_stack import ingress_metrics, load_stack, take_ingress_nodes  # bench/ is on the path when this script runs

from switchboard.cli import main
from switchboard.stack import Stack

HOP = re.compile(r'^switchboard_bus_hop_seconds_bucket\{le="([^"]+)",service="turns",topic="audio.in"\} (\S+)$', re.M)
# the ingress's own event-loop lag and call-admission steps (switchboard/looplag.py, ingress/runtime.py)
INGRESS_HIST = re.compile(
    r'^(switchboard_(?:event_loop_lag|call_start_step)_seconds)_bucket\{([^}]*)le="([^"]+)"([^}]*)\} (\S+)$', re.M)
COUNT = re.compile(r'^(switchboard_(?:records|caller_frames)_consumed_total)\{([^}]*)\} (\S+)$', re.M)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def buckets(text: str) -> dict[float, float]:
    return {float("inf") if le == "+Inf" else float(le): float(v) for le, v in HOP.findall(text)}


def quantile(cumulative: dict[float, float], q: float) -> float:
    """Linear interpolation inside the bucket that holds quantile ``q`` (as Prometheus's histogram_quantile)."""
    edges = sorted(cumulative)
    total = cumulative[edges[-1]]
    rank, lower, below = q * total, 0.0, 0.0
    for le in edges:
        if cumulative[le] >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(cumulative[le] - below, 1e-9)
        lower, below = le, cumulative[le]
    return lower


def ingress_histograms(text: str) -> dict[str, dict[float, float]]:
    """Every bucketed series of the ingress's loop lag and call-start steps, by metric and labels."""
    out: dict[str, dict[float, float]] = {}
    for name, pre, le, post, value in INGRESS_HIST.findall(text):
        labels = (pre + post).strip(",")
        out.setdefault(f"{name}{{{labels}}}", {})[float("inf") if le == "+Inf" else float(le)] = float(value)
    return out


def print_ingress(stack: Stack, before: dict[str, dict[float, float]]) -> None:
    after = ingress_now(stack)
    for series, cum in sorted(after.items()):
        delta = {le: v - before.get(series, {}).get(le, 0.0) for le, v in cum.items()}
        if max(delta.values(), default=0) > 0:
            p = {q: quantile(delta, q) * 1000 for q in (0.5, 0.95, 0.99)}
            print(f"  {series}: p50 {p[0.5]:.1f} ms, p95 {p[0.95]:.1f} ms, p99 {p[0.99]:.1f} ms; "
                  f"{max(delta.values()):.0f} samples")


def ingress_now(stack: Stack) -> dict[str, dict[float, float]]:
    """The ingress's histograms, bucket by bucket summed over its processes (``--ingress-nodes``)."""
    total: dict[str, dict[float, float]] = {}
    for url, headers in ingress_metrics(stack):
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            for series, cum in ingress_histograms(resp.read().decode()).items():
                into = total.setdefault(series, {})
                for le, v in cum.items():
                    into[le] = into.get(le, 0.0) + v
    return total


def run(args: list[str]) -> int:
    nodes, load_args = take_ingress_nodes(args)
    with load_stack(nodes) as (stack, run_dir):
        try:
            turns = [f"http://127.0.0.1:{w.metrics_port}/metrics" for w in stack.workers if w.service.name == "turns"]
            before = [buckets(scrape(u)) for u in turns]
            ingress0 = ingress_now(stack)
            code = main(["load", "--url", stack.http_base, "--run-dir", str(run_dir), *load_args])
            after = [scrape(u) for u in turns]
            hop: dict[float, float] = {}
            for b, text in zip(before, after, strict=True):
                for le, v in buckets(text).items():
                    hop[le] = hop.get(le, 0.0) + v - b.get(le, 0.0)
            if hop and max(hop.values()) > 0:
                p = {q: quantile(hop, q) * 1000 for q in (0.5, 0.95, 0.99)}
                within = hop.get(0.05, 0.0) / max(hop.values()) * 100
                print(f"audio.in hop (turns): p50 {p[0.5]:.1f} ms, p95 {p[0.95]:.1f} ms, p99 {p[0.99]:.1f} ms; "
                      f"{within:.1f} % within 50 ms; {max(hop.values()):.0f} records")
            for text in after:
                for name, labels, value in COUNT.findall(text):
                    if 'topic="audio.in"' in labels or "caller_frames" in name:
                        print(f"  {name}{{{labels}}} {value}")
            print("ingress event loop and call admission:")
            print_ingress(stack, ingress0)
            return code
        finally:
            if keep := os.environ.get("LOAD_HOP_KEEP"):  # the services' logs, for a post-mortem
                shutil.copytree(run_dir, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.json"))


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
