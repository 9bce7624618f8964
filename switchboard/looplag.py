"""Event-loop lag: how late a 50 ms timer fires. A loop busy with CPU work (hundreds of sockets' frames) delays
every callback on it, so a websocket handshake or a produce acknowledgement waits in the loop's queue rather than on
the network; this measures that wait where it happens (``switchboard_event_loop_lag_seconds{service}``)."""

from __future__ import annotations

import asyncio

from switchboard import metrics

INTERVAL_S = 0.05


async def watch(service: str, interval_s: float = INTERVAL_S) -> None:
    """Run until cancelled: sleep ``interval_s``, observe how much later than that the loop woke us."""
    loop = asyncio.get_running_loop()
    lag = metrics.LOOP_LAG.labels(service)
    while True:
        before = loop.time()
        await asyncio.sleep(interval_s)
        lag.observe(max(0.0, loop.time() - before - interval_s))


def start(service: str) -> asyncio.Task[None]:
    return asyncio.create_task(watch(service), name="loop lag")
