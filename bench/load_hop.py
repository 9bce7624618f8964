"""`bench/load_stack.py` plus the `audio.in` bus hop: a load run on a fresh load-test stack, and the turns
worker's ``switchboard_bus_hop_seconds{service="turns",topic="audio.in"}`` over the run (p50/p95/p99 interpolated in
its buckets), the ingress's send-path drops, and the caller audio records and frames the turns worker consumed.

    SWITCHBOARD_AUDIO_RECORD_MS=60 .venv/bin/python bench/load_hop.py --callers 500 --ramp 20 --duration 80 --silent
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import urllib.request

from load_stack import load_stack  # bench/ is on the path when this script runs

from switchboard.cli import main

HOP = re.compile(r'^switchboard_bus_hop_seconds_bucket\{le="([^"]+)",service="turns",topic="audio.in"\} (\S+)$', re.M)
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


def run(load_args: list[str]) -> int:
    with load_stack() as (stack, run_dir):
        try:
            turns = [f"http://127.0.0.1:{w.metrics_port}/metrics" for w in stack.workers if w.service.name == "turns"]
            before = [buckets(scrape(u)) for u in turns]
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
            return code
        finally:
            if keep := os.environ.get("LOAD_HOP_KEEP"):  # the services' logs, for a post-mortem
                shutil.copytree(run_dir, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.json"))


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
