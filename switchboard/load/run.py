"""A load run: callers dialled along the ramp, a hard cap on time, a progress bar, then the result.

Bounded in count (``MAX_CALLERS``) and in time: at ``duration`` every call still open is hung
up, and the few seconds after that (hang-ups, the pipeline catching up on frames) are bounded too.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard.load import frames, procs
from switchboard.load.caller import CallRecord, LoadCaller
from switchboard.load.report import summarize
from switchboard.load.scenario import CallPlan
from switchboard.load.target import Target, http_client, is_loopback, metrics_headers

MAX_CALLERS = 1000
MAX_DURATION_S = 600.0
HANG_UP_GRACE_S = 10.0  # after the cap: calls get this long to close before they are cancelled


class LoadError(ValueError):
    """The run cannot start (outside the bounds)."""


@dataclass
class LoadConfig:
    callers: int
    ramp: float
    duration: float
    turns: int
    silent: bool = False
    barge_in_every: int = 0
    reply_timeout: float = 20.0
    clips: str = ""
    url: str = ""
    turns_metrics: list[str] = field(default_factory=list)

    def check(self) -> None:
        if not 1 <= self.callers <= MAX_CALLERS:
            raise LoadError(f"--callers must be 1…{MAX_CALLERS}")
        if not 0 < self.duration <= MAX_DURATION_S:
            raise LoadError(f"--duration must be more than 0 and at most {MAX_DURATION_S:.0f} s")
        if not 0 <= self.ramp < self.duration:
            raise LoadError("--ramp must be at least 0 and shorter than --duration (every caller must dial)")
        if not self.silent and not 1 <= self.turns <= 20:
            raise LoadError("--turns must be 1…20")
        if not 1 <= self.reply_timeout <= self.duration + 1:
            raise LoadError("--reply-timeout must be at least 1 s and not beyond --duration")


def turns_metrics_urls(cfg: LoadConfig, target: Target, found: list[procs.StackProcess]) -> tuple[list[str], str]:
    """Where to read frames consumed, and how they were found (for the report)."""
    if cfg.turns_metrics:
        return cfg.turns_metrics, "turns /metrics given with --turns-metrics"
    urls = [f"http://127.0.0.1:{p.metrics_port}/metrics" for p in found if p.service == "turns" and p.metrics_port]
    if urls:
        return urls, f"turns /metrics of the local stack ({len(urls)} worker(s), found in /proc)"
    why = "no local stack found behind this port" if is_loopback(target.host) else "remote target"
    return [], f"not measured: {why}; give --turns-metrics URL"


def ingress_metrics(
    node_ports: list[int | None], http_base: str, headers: dict[str, str]
) -> list[tuple[str, dict[str, str]]]:
    """Where to read the ingress's counters (URL, headers): each local ingress process's own metrics port when every
    one has such a port (several processes on one port, `--scale ingress=N`: the shared port answers for one of them
    at random), else the public /metrics with the metrics token."""
    if node_ports and all(node_ports):
        return [(f"http://127.0.0.1:{port}/metrics", {}) for port in node_ports]
    return [(f"{http_base}/metrics", headers)]


class Progress:
    """A tqdm bar over the run's seconds, with calls, greetings, answers and errors alongside."""

    def __init__(self, total_s: float, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=int(total_s), unit="s", disable=None if enabled else True, leave=False,
                        dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}")

    def update(self, t: float, callers: list[LoadCaller], active: int) -> None:
        recs = [c.rec for c in callers]
        self.bar.n = min(self.bar.total, int(t))
        self.bar.set_postfix_str(
            f"calls {active} greeted {sum(r.greeting_s is not None for r in recs)} "
            f"answers {sum(r.turns_answered for r in recs)} errors {sum(bool(r.errors()) for r in recs if r.ended_t)}",
            refresh=True,
        )

    def close(self) -> None:
        self.bar.close()


async def run_load(cfg: LoadConfig, plans: list[CallPlan], target: Target, *, progress: bool = False) -> dict[str, Any]:
    cfg.check()
    found = procs.discover(target.port) if is_loopback(target.host) else []
    urls, method = turns_metrics_urls(cfg, target, found)
    before = await frames.consumed(urls) if urls else None
    if before is None and urls:
        method = f"not measured: cannot read {', '.join(urls)}"
    bad_sources = ingress_metrics([p.metrics_port for p in found if p.service == "ingress"], target.http_base,
                                  metrics_headers(target))
    bad_before = await frames.ingress_bad_input(bad_sources)
    load_before = os.getloadavg()[0]  # a shared machine's other work shows up in every figure: say how busy it was
    meter = procs.CpuMeter(found)
    meter.start()

    stop = asyncio.Event()
    active = 0

    def on_active(delta: int) -> None:
        nonlocal active
        active += delta

    http = http_client()
    t0 = time.monotonic()
    callers = [LoadCaller(p, target, t0, stop, http, reply_timeout_s=cfg.reply_timeout, on_active=on_active)
               for p in plans]

    async def dial(caller: LoadCaller) -> CallRecord:
        await asyncio.sleep(max(0.0, t0 + caller.plan.start_s - time.monotonic()))
        return await caller.run()

    tasks = [asyncio.create_task(dial(c)) for c in callers]
    timeline: list[dict[str, float]] = []
    bar = Progress(cfg.duration, progress)
    try:
        while True:
            t = time.monotonic() - t0
            timeline.append({"t": round(t, 2), "active": active})
            bar.update(t, callers, active)
            if all(task.done() for task in tasks):
                break
            if t >= cfg.duration:
                stop.set()
                break
            await asyncio.wait(tasks, timeout=min(1.0, cfg.duration - t))
        _, pending = await asyncio.wait(tasks, timeout=HANG_UP_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        timeline.append({"t": round(time.monotonic() - t0, 2), "active": active})
    finally:
        bar.close()
        await http.aclose()
    wall_s = time.monotonic() - t0
    cpu = meter.stop()  # the generator's own CPU even when no stack process was found
    records = [c.rec for c in callers]
    sent = sum(r.frames_sent for r in records if r.admitted)
    consumed = await frames.settle(urls, before, sent) if before is not None else None
    bad_after = await frames.ingress_bad_input(bad_sources)
    ingress_bad = None
    if bad_before is not None and bad_after is not None:
        ingress_bad = {k: int(v - bad_before.get(k, 0)) for k, v in bad_after.items() if v > bad_before.get(k, 0)}
    config = {
        "callers": cfg.callers, "ramp": cfg.ramp, "duration": cfg.duration, "turns": 0 if cfg.silent else cfg.turns,
        "silent": cfg.silent, "barge_in_every": cfg.barge_in_every, "reply_timeout": cfg.reply_timeout,
        "clips": cfg.clips, "url": cfg.url, "channel": "twilio",
        "signed": bool(getattr(target.credentials, "twilio_auth_token", "")),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - wall_s)),
        "machine": {"cpus": os.cpu_count(), "loadavg_1m_before": round(load_before, 2),
                    "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "stack_processes": {p.service: sum(1 for q in found if q.service == p.service) for p in found},
    }
    result = summarize(records, config, frames_consumed=consumed, frames_method=method, cpu=cpu, wall_s=wall_s,
                       timeline=timeline)
    result["summary"]["ingress_bad_input"] = ingress_bad  # why frames were dropped, as the ingress counted
    return result


def default_output(root: Path, suffix: str) -> Path:
    return root / ".switchboard" / "load" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.{suffix}"
