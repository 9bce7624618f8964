"""A metrics port that is already taken is a configuration error: every kind of service (the ingress, a
processor, the sink) says so and exits 2 at once, with no traceback and without waiting for a broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["ingress.main", "processors.agent.main", "sinks.main"])
def test_a_taken_metrics_port_ends_the_service_with_the_reason_and_exit_code_2(module: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "SWITCHBOARD_METRICS_PORT": str(port),
            "SWITCHBOARD_METRICS_HOST": "127.0.0.1",
            "SWITCHBOARD_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # nothing there: the port check comes first
            "SWITCHBOARD_AUTH": "off",
            "SWITCHBOARD_CLICKHOUSE_DSN": f"chdb://{tmp_path}/ch",
            "SWITCHBOARD_PORT": "0",
        }
        done = subprocess.run([sys.executable, "-m", module], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "SWITCHBOARD_METRICS_PORT" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
