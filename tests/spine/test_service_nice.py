"""`switchboard up` runs each service at the CPU niceness SWITCHBOARD_SERVICE_NICE gives it, every thread included
(a worker's inference threads are where the time goes); a bad value stops `up` with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from switchboard.broker import listen_port
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack


def niceness(pid: int) -> list[int]:
    """The nice value of every thread of ``pid`` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        values.append(int(stat.rsplit(")", 1)[1].split()[16]))
    return values


@pytest.mark.slow
def test_a_service_runs_every_thread_at_its_niceness_and_the_others_keep_theirs(broker, tmp_path):
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"n{uuid.uuid4().hex[:8]}.",
                               service_nice={"stt": 7})
    stack = Stack(settings, ingress_port=listen_port(), run_dir=tmp_path, only=("stt", "agent"))
    stack._next_metrics_port = listen_port()
    stack.start(embedded=False)
    try:
        stack.wait_ready(120)
        by_name = {w.service.name: w.process.pid for w in stack.workers}
        stt, agent = niceness(by_name["stt"]), niceness(by_name["agent"])
        assert len(stt) > 2, "the STT worker runs its loop, inference and onnxruntime threads"
        assert set(stt) == {7}
        assert set(agent) == {os.nice(0)}
    finally:
        stack.stop()


@pytest.mark.parametrize("value, says", [('{"sst": 5}', "no such service: sst"),
                                         ('{"stt": 25}', "niceness runs from -20 to 19")])
def test_an_unknown_service_or_an_out_of_range_niceness_is_refused(monkeypatch, value, says):
    monkeypatch.setenv("SWITCHBOARD_SERVICE_NICE", value)
    with pytest.raises(ValidationError, match=says):
        ServiceSettings()
    env = {**os.environ, "SWITCHBOARD_SERVICE_NICE": value}
    up = subprocess.run([sys.executable, "-m", "switchboard.cli", "up"], env=env, capture_output=True, text=True,
                        timeout=60)
    assert up.returncode == 2
    assert "SWITCHBOARD_SERVICE_NICE" in up.stderr and says in up.stderr and "Traceback" not in up.stderr


@pytest.mark.slow
def test_no_worker_takes_the_ingress_port_for_its_metrics_while_the_ingress_is_still_starting(broker, tmp_path):
    """Two free ports are picked apart (the ingress's, and the first of the workers' metrics ports); when they
    meet, the workers' ports step over the ingress's, which its process binds only a second or so later."""
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"n{uuid.uuid4().hex[:8]}.")
    port = listen_port()
    stack = Stack(settings, ingress_port=port, run_dir=tmp_path, only=("agent",))
    stack._next_metrics_port = port
    stack.start(embedded=False)
    try:
        assert [w.metrics_port for w in stack.workers] == [port + 1]
    finally:
        stack.stop()
