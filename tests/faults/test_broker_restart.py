"""The embedded broker dies under `switchboard up`: it is restarted, everything recovers without a hand; and `up`
killed with SIGKILL leaves no broker or worker behind (README "Operations": surviving the broker)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import pytest

from switchboard.broker import listen_port, port_open
from switchboard.caller import Utterance
from switchboard.records import CallEvent, CallEventKind
from switchboard.topics import CALLS
from tests.faults.support import TimedCall, alive, read_all, switchboard_up

pytestmark = pytest.mark.slow


async def _greeting_heard(up, deadline: float) -> tuple[TimedCall, float]:
    """New calls, one after another, until one hears the greeting; returns it and when it was heard."""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no new call heard the greeting in time"
        call = TimedCall(up.url, up.settings, up.credentials)
        try:
            await asyncio.wait_for(call.run([], timeout_s=min(remaining, 6)), remaining + 5)
        except Exception:  # refused or cut while the stack recovers: call again (bounded by the deadline)
            await asyncio.sleep(0.2)
            continue
        if "reply-0" in call.result.marks and call.heard_at:
            return call, call.heard_at[0]


async def test_a_killed_broker_is_restarted_and_new_calls_are_answered_within_10_s(tmp_path):
    with switchboard_up(tmp_path, listen_port(), listen_port()) as up:
        old_pid = up.broker_pid()
        assert old_pid and alive(old_pid)
        # a call in progress while the broker dies: it hears its greeting, then keeps the line open
        running = TimedCall(up.url, up.settings, up.credentials)
        line_open = Utterance(np.zeros(16000 * 40, dtype=np.int16), "40 s of silence")
        task = asyncio.create_task(running.run([line_open], timeout_s=20))
        await asyncio.sleep(6)
        assert running.heard_at, "the call in progress heard no greeting before the fault"

        killed = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        while not (up.broker_pid() not in (None, old_pid) and port_open("127.0.0.1", up.broker_port)):
            assert time.monotonic() - killed < 10, "switchboard up did not restart the broker"
            await asyncio.sleep(0.05)
        restarted = time.monotonic()

        _, heard = await _greeting_heard(up, restarted + 10)
        print(f"\nbroker kill -> restarted {restarted - killed:.2f} s; restarted -> a new call's greeting heard "
              f"{heard - restarted:.2f} s (kill -> answered {heard - killed:.2f} s)")
        assert heard - restarted < 10

        # the call that was running: the caller hangs up, and its end is recorded on the bus (the sink's input)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert up.process.poll() is None
        ends = []
        for _ in range(50):
            events = await read_all(up.settings, CALLS, CallEvent)
            ends = [e for e in events if e.kind is CallEventKind.CALL_ENDED and e.call_id == running.caller.call_id]
            if ends:
                break
            await asyncio.sleep(0.2)
        assert ends, "the call that lived through the broker restart was not recorded as ended"


async def test_switchboard_up_killed_with_sigkill_leaves_no_broker_or_worker_behind(tmp_path):
    port, broker_port = listen_port(), listen_port()
    with switchboard_up(tmp_path, port, broker_port) as up:
        broker = up.broker_pid()
        children = up.descendants()
        assert broker in children and len(children) >= 7  # tansu, the ingress and the processors
        up.process.kill()
        up.process.wait()
        deadline = time.monotonic() + 40  # SIGTERM from the kernel: the ingress drains, the workers commit
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        left = [pid for pid in children if alive(pid)]
        assert not left, f"processes left behind: {left}"
        assert not port_open("127.0.0.1", broker_port) and not port_open("127.0.0.1", port)
