"""Event-loop lag (switchboard/looplag.py): a loop held by CPU work shows as late timers in
``switchboard_event_loop_lag_seconds``, before any socket on it times out."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from switchboard import looplag


def lag_sample(suffix: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(f"switchboard_event_loop_lag_seconds_{suffix}", labels) or 0.0


async def test_a_blocked_loop_is_measured_as_lag() -> None:
    labels = {"service": "test-looplag"}
    task = looplag.start("test-looplag")
    try:
        await asyncio.sleep(0.12)  # a couple of prompt samples first
        time.sleep(0.3)  # CPU work holding the loop, as a burst of frames would
        await asyncio.sleep(0.12)
    finally:
        task.cancel()
    count = lag_sample("count", labels)
    late = count - lag_sample("bucket", {**labels, "le": "0.1"})
    assert count >= 2
    assert late >= 1, "the timer that waited behind the blocked loop is counted as more than 100 ms late"
    assert lag_sample("sum", labels) >= 0.2
