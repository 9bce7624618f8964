"""The local stack's processes, found from /proc, and the CPU seconds they spend.

A stack started by ``switchboard up`` (or the test helper) runs each service as
``python -m <module>`` with ``SWITCHBOARD_PORT`` (the ingress port) and
``SWITCHBOARD_KAFKA_BOOTSTRAP`` in its environment, so the stack behind a target port is
told apart from other stacks on the same machine by its environment; its tansu broker is
the one listening on that bootstrap address. Only this user's processes are readable, which
is all a local stack needs. Linux only; elsewhere nothing is found and CPU is not reported.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from switchboard.services import SERVICES

PROC = Path("/proc")
BROKER = "broker"
GENERATOR = "load generator"
_MODULES = {s.module: s.name for s in SERVICES}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class StackProcess:
    pid: int
    service: str  # a service name of switchboard.services, or "broker"
    metrics_port: int | None = None


def _cmdline(pid: int) -> list[str]:
    return (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")


def _environ(pid: int) -> dict[str, str]:
    raw = (PROC / str(pid) / "environ").read_bytes().decode(errors="replace").split("\0")
    return dict(item.split("=", 1) for item in raw if "=" in item)


def _module(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m":
            return argv[i + 1]
    return None


def discover(ingress_port: int) -> list[StackProcess]:
    """Every service process of the stack whose ingress listens on ``ingress_port``, and its broker."""
    found: list[StackProcess] = []
    bootstraps: set[str] = set()
    brokers: list[tuple[int, list[str]]] = []
    if not PROC.is_dir():
        return found
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            argv = _cmdline(pid)
            if "--listener-url" in argv and any("tansu" in a for a in argv[:1]):
                brokers.append((pid, argv))
                continue
            service = _MODULES.get(_module(argv) or "")
            if service is None:
                continue
            env = _environ(pid)
        except OSError:  # gone, or another user's process
            continue
        if int(env.get("SWITCHBOARD_PORT") or 8080) != ingress_port:
            continue
        port = int(env.get("SWITCHBOARD_METRICS_PORT") or 0) or None
        found.append(StackProcess(pid, service, port))
        if env.get("SWITCHBOARD_KAFKA_BOOTSTRAP"):
            bootstraps.add(env["SWITCHBOARD_KAFKA_BOOTSTRAP"])
    for pid, argv in brokers:
        url = argv[argv.index("--listener-url") + 1] if "--listener-url" in argv[:-1] else ""
        if url.removeprefix("tcp://") in bootstraps:
            found.append(StackProcess(pid, BROKER))
    return sorted(found, key=lambda p: (p.service, p.pid))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (None once it is gone)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is the state
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU seconds per service between ``start()`` and ``stop()``, plus the generator's own."""

    def __init__(self, processes: list[StackProcess]) -> None:
        self.processes = processes
        self._before: dict[int, float] = {}
        self._gen_before = 0.0
        self.wall_s = 0.0
        self._t = 0.0

    def start(self) -> None:
        self._before = {p.pid: v for p in self.processes if (v := cpu_seconds(p.pid)) is not None}
        self._gen_before = time.process_time()
        self._t = time.monotonic()

    def stop(self) -> dict[str, dict[str, float | int]]:
        """{service: {cpu_s, processes}}; a process that died mid-run counts up to its last reading."""
        self.wall_s = time.monotonic() - self._t
        out: dict[str, dict[str, float | int]] = {}
        for p in self.processes:
            before = self._before.get(p.pid)
            after = cpu_seconds(p.pid)
            if before is None or after is None:
                continue
            row = out.setdefault(p.service, {"cpu_s": 0.0, "processes": 0})
            row["cpu_s"] = round(float(row["cpu_s"]) + after - before, 2)
            row["processes"] = int(row["processes"]) + 1
        out[GENERATOR] = {"cpu_s": round(time.process_time() - self._gen_before, 2), "processes": 1}
        return out
