"""Starting and stopping: the ingress drains on SIGTERM; `switchboard up` stops everything on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websockets

from switchboard.broker import free_port, port_open
from tests.pipeline import running_stack, twilio_stream, with_parameters
from tests.spine.test_bad_input import _start

pytestmark = pytest.mark.slow


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_ingress_drains_on_sigterm_keeping_active_calls_and_refusing_new_ones(broker, tmp_path):
    with running_stack(broker, tmp_path, only=("ingress",), SWITCHBOARD_DRAIN_TIMEOUT_S="20") as stack:
        ingress = stack.workers[0]
        base = f"127.0.0.1:{stack.ingress_port}"
        call, params = await twilio_stream(stack, "CAdrain")
        async with call:
            await call.send(with_parameters(_start("CAdrain"), params))
            await asyncio.sleep(0.5)
            ingress.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            assert _status(f"http://{base}/ready") == 503
            assert _status(f"http://{base}/health") == 200
            late, late_params = await twilio_stream(stack, "CAlate")
            async with late:
                await late.send(with_parameters(_start("CAlate"), late_params))
                with pytest.raises(websockets.ConnectionClosed) as refused:
                    await asyncio.wait_for(late.recv(), 5)
                assert refused.value.rcvd.code == 1013
            assert ingress.process.poll() is None, "ingress quit with a call still active"
            await call.send(json.dumps({"event": "stop", "streamSid": "MZCAdrain", "stop": {}}))
        assert await asyncio.to_thread(ingress.process.wait, 15) == 0


def test_switchboard_up_starts_everything_and_stops_it_all_on_sigterm(tmp_path):
    port, broker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_KAFKA_BOOTSTRAP"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli", "up", "--port", str(port), "--broker-port", str(broker_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "Switchboard is up" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "switchboard up exited early"
            assert time.monotonic() < deadline, "switchboard up did not become ready"
        assert _status(f"http://127.0.0.1:{port}/ready") == 200
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 5  # tansu, the ingress and the processors
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for pid in children:
            stat = Path(f"/proc/{pid}/stat")
            assert not stat.exists() or stat.read_text().split()[2] == "Z"  # gone, or a zombie awaiting reaping
        assert not port_open("127.0.0.1", port) and not port_open("127.0.0.1", broker_port)
    finally:
        if proc.poll() is None:
            proc.kill()
