"""`switchboard up`'s supervision rounds (``Stack.supervise``): a dead worker is started again at once and in its
place; one that keeps dying young waits a growing delay between starts, as the kubelet's back-off does. The
workers here are real processes that exit at once (a service with a missing model would), not services."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time

from switchboard.broker import EmbeddedBroker, listen_port, reclaim
from switchboard.services import BY_NAME
from switchboard.settings import ServiceSettings
from switchboard.stack import ROOT, Stack, Worker


class CrashingStack(Stack):
    """A stack whose workers exit with code 2 as soon as they start; remembers every start."""

    starts: list[tuple[str, int, int, float]]

    def spawn(self, service, index=None, metrics_port=None) -> Worker:
        self.starts.append((service.name, index, metrics_port, time.monotonic()))
        proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])
        proc.wait()
        worker = Worker(service, index if index is not None else 0, metrics_port or 0, proc, self.run_dir / "x.log")
        self.workers.append(worker)
        return worker


def _stack(tmp_path) -> CrashingStack:
    stack = CrashingStack(ServiceSettings(), run_dir=tmp_path)
    stack.starts = []
    return stack


def test_a_dead_worker_is_restarted_at_once_with_its_index_and_metrics_port(tmp_path):
    stack = _stack(tmp_path)
    first = stack.spawn(BY_NAME["stt"], index=1, metrics_port=9321)
    first.started -= 60  # it had run for a minute before it died
    assert stack.supervise() == ["stt-1 (exit 2)"]
    assert stack.starts[-1][:3] == ("stt", 1, 9321)  # same name (group_instance_id), same /metrics


def test_a_worker_that_keeps_dying_young_is_restarted_with_a_growing_delay(tmp_path):
    stack = _stack(tmp_path)
    stack.spawn(BY_NAME["turns"], index=0, metrics_port=9322)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        stack.supervise()
        time.sleep(0.05)
    times = [t for name, _, _, t in stack.starts if name == "turns"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # the first death: at once; then 1, 2, 4 s: not ten starts a second
    assert 4 <= len(times) <= 5, gaps
    assert gaps[0] < 0.5 and 0.9 < gaps[1] < 1.5 and 1.9 < gaps[2] < 2.5, gaps


def test_the_next_up_stops_a_broker_an_earlier_one_left_behind(tmp_path):
    pidfile = tmp_path / "tansu-1.pid"
    left = EmbeddedBroker(log_path=tmp_path / "tansu.log", pidfile=pidfile).start()  # its `up` died with no signal
    try:
        assert reclaim(pidfile) == left.process.pid
        assert left.process.wait(10) is not None and not pidfile.exists()
    finally:
        left.stop()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # a pid file whose pid now belongs to another program: that program is left alone
        pidfile.write_text(f"{other.pid} 1\n")
        assert reclaim(pidfile) is None and other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_worker_whose_kafka_client_cannot_go_on_exits_3_for_its_supervisor(tmp_path):
    env = {**os.environ, "SWITCHBOARD_KAFKA_BOOTSTRAP": f"127.0.0.1:{listen_port()}", "SWITCHBOARD_LOG_LEVEL": "INFO"}
    done = subprocess.run([sys.executable, "-m", "processors.agent.main"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # JSON log lines only, no bare traceback
    assert any(line["msg"] == "worker failed; exiting so that it is restarted" for line in lines)
    assert not any(line["msg"].startswith("Unclosed") for line in lines)  # every client it started was stopped
