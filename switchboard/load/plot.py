"""The PNG of a load run: latency over time (with the calls in progress), and percentiles against load."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from switchboard.load.report import LATENCIES

COLORS = {"response": "tab:blue", "greeting": "tab:green", "barge_in": "tab:red"}


def _by_load(points: list[tuple[int, float]], bins: int = 8) -> tuple[list[float], dict[int, list[float]]]:
    """Percentiles of latency in bins of concurrent calls: (bin centres, {50|95|99: values})."""
    loads = np.array([p[0] for p in points], dtype=float)
    values = np.array([p[1] for p in points], dtype=float)
    edges = np.unique(np.linspace(loads.min(), loads.max() + 1, bins + 1).round())
    centres, out = [], {50: [], 95: [], 99: []}
    for lo, hi in itertools.pairwise(edges):
        sel = values[(loads >= lo) & (loads < hi)]
        if len(sel):
            centres.append((lo + hi - 1) / 2)
            for q in out:
                out[q].append(float(np.percentile(sel, q)))
    return centres, out


def write_png(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    timeline = result["timeline"]
    calls = result["calls"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 8))
    cfg = result["config"]
    fig.suptitle(f"switchboard load: {result['summary']['callers']} callers, "
                 f"{'silent' if cfg.get('silent') else str(cfg.get('turns')) + ' turn(s)'}, ramp {cfg.get('ramp')} s")

    def concurrent(t: float) -> int:
        return sum(1 for c in calls if c["started_t"] is not None and c["started_t"] <= t
                   and (c["ended_t"] if c["ended_t"] is not None else float("inf")) > t)

    points: dict[str, list[tuple[float, float]]] = {
        "greeting": [(c["started_t"], c["greeting_s"]) for c in calls if c["greeting_s"] is not None],
        "response": [tuple(x) for c in calls for x in c["responses"]],
        "barge_in": [tuple(x) for c in calls for x in c["barge_ins"]],
    }
    for kind in LATENCIES:
        if points[kind]:
            t, v = zip(*points[kind], strict=True)
            ax1.scatter(t, v, s=10, alpha=0.7, color=COLORS[kind], label=kind.replace("_", "-"))
    ax1.set_xlabel("seconds since the run started")
    ax1.set_ylabel("latency (s)")
    ax1.set_title("latency over time")
    if timeline:
        twin = ax1.twinx()
        twin.plot([p["t"] for p in timeline], [p["active"] for p in timeline], color="grey", lw=1, label="calls")
        twin.set_ylabel("calls in progress")
    ax1.legend(loc="upper left")

    for kind in LATENCIES:
        loaded = [(concurrent(t), v) for t, v in points[kind]]
        if not loaded:
            continue
        centres, qs = _by_load(loaded)
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            ax2.plot(centres, qs[q], style, marker="o", ms=3, color=COLORS[kind],
                     label=f"{kind.replace('_', '-')} p{q}")
    ax2.set_xlabel("concurrent calls when the sample was taken")
    ax2.set_ylabel("latency (s)")
    ax2.set_title("percentiles against load")
    if ax2.lines:
        ax2.legend(fontsize="small", ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
