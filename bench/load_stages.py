"""`bench/load_stack.py` plus where a turn's time goes: every latency histogram of every service over the run.

    .venv/bin/python bench/load_stages.py --callers 20 --ramp 5 --turns 2 --barge-in-every 4 --duration 120

Before and after the load run it scrapes each worker's ``/metrics`` and the ingress's, and prints, per service, every
histogram series that gained samples during the run (stage times, bus hops by topic, end-of-turn waits, early
transcripts, batch sizes, the ingress's response latency …) as p50 / p95 / p99, interpolated in its buckets as
Prometheus's ``histogram_quantile`` does. ``--only REGEX`` keeps the series whose name matches.
"""

from __future__ import annotations

import re
import sys
import urllib.request

from load_hop import quantile, scrape  # bench/ is on the path when this script runs
from load_stack import load_stack

from switchboard.cli import main

BUCKET = re.compile(r'^(\w+)_bucket\{([^}]*)\} (\S+)$', re.M)
LE = re.compile(r'(?:^|,)le="([^"]+)"')


def histograms(text: str) -> dict[str, dict[float, float]]:
    """Every bucketed series: ``name{labels without le}`` → cumulative count per upper bound."""
    out: dict[str, dict[float, float]] = {}
    for name, labels, value in BUCKET.findall(text):
        match = LE.search(labels)
        if match is None:
            continue
        rest = LE.sub("", labels).strip(",")
        le = float("inf") if match.group(1) == "+Inf" else float(match.group(1))
        out.setdefault(f"{name}{{{rest}}}", {})[le] = float(value)
    return out


def report(name: str, before: dict[str, dict[float, float]], after: dict[str, dict[float, float]],
           only: re.Pattern[str] | None) -> None:
    print(f"{name}:")
    for series, cumulative in sorted(after.items()):
        if only is not None and not only.search(series):
            continue
        delta = {le: v - before.get(series, {}).get(le, 0.0) for le, v in cumulative.items()}
        samples = max(delta.values(), default=0.0)
        if samples <= 0:
            continue
        p = [quantile(delta, q) * 1000 for q in (0.5, 0.95, 0.99)]
        scale = "" if "batch" in series else " ms"
        if scale == "":
            p = [v / 1000 for v in p]
        print(f"  {series}: p50 {p[0]:.1f}{scale}, p95 {p[1]:.1f}{scale}, p99 {p[2]:.1f}{scale}; {samples:.0f} samples")


def run(argv: list[str]) -> int:
    only = None
    if "--only" in argv:
        i = argv.index("--only")
        only = re.compile(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    with load_stack() as (stack, run_dir):
        urls = {f"{w.service.name} (:{w.metrics_port})": (f"http://127.0.0.1:{w.metrics_port}/metrics", {})
                for w in stack.workers if w.service.name != "ingress"}
        urls["ingress"] = (f"{stack.http_base}/metrics", stack.client_credentials.metrics_headers())

        def read(url: str, headers: dict[str, str]) -> dict[str, dict[float, float]]:
            if not headers:
                return histograms(scrape(url))
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
                return histograms(resp.read().decode())

        before = {name: read(*where) for name, where in urls.items()}
        code = main(["load", "--url", stack.http_base, "--run-dir", str(run_dir), *argv])
        print("where the time went (every histogram that gained samples during the run):")
        for name, where in urls.items():
            report(name, before[name], read(*where), only)
        return code


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
