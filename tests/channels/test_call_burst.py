"""A burst of call starts (issue 11: 200 calls starting within 10 s): every call that connects at the same moment
is admitted and announced, call_started goes out on the node's admission producer (never queued behind the
audio producer's large batches), and the ingress measures what a burst costs it: the call-admission steps and
its event loop's lag (``switchboard_call_start_step_seconds``, ``switchboard_event_loop_lag_seconds``).

The real ingress on the real broker; no timing is asserted (bench/load_stack.py measures it)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import websockets
from prometheus_client import REGISTRY

from switchboard.broker import EmbeddedBroker
from switchboard.records import CallEvent, CallEventKind
from switchboard.topics import CALLS
from tests.security.lone import all_records, lone_ingress, twilio_call, twilio_media

BURST = 40


def samples(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0


async def test_calls_that_all_start_at_once_are_all_admitted_and_announced(broker: EmbeddedBroker,
                                                                          tmp_path: Path) -> None:
    started_before = samples("switchboard_call_start_step_seconds", {"step": "call_started"})
    webhooks_before = samples("switchboard_call_start_step_seconds", {"step": "webhook"})
    # as a load-test stack (bench/load_stack.py): one source making every call is exempt from the per-source limits
    async with lone_ingress(broker, tmp_path, audio_record_ms=60, source_limit_exempt="127.0.0.1/32") as ing:
        # every webhook, handshake and start at once, each caller talking right after its start
        calls = await asyncio.gather(*(twilio_call(ing) for _ in range(BURST)))
        for ws, _ in calls:
            for i in range(5):
                await ws.send(twilio_media(chunk=i))
        sessions = ing.runtime.egress.sessions
        for _ in range(200):
            if len(sessions) == BURST:
                break
            await asyncio.sleep(0.05)
        assert sorted(sessions) == sorted(call_id for _, call_id in calls), "every call admitted"
        lag_samples = samples("switchboard_event_loop_lag_seconds", {"service": "ingress"})
        for ws, _ in calls:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.close()
        records = await all_records(ing.settings, CALLS, None)
    started = [r for r in records if isinstance(r, CallEvent) and r.kind is CallEventKind.CALL_STARTED]
    assert sorted(r.call_id for r in started) == sorted(call_id for _, call_id in calls), "one call_started each"
    assert samples("switchboard_call_start_step_seconds", {"step": "call_started"}) - started_before == BURST
    assert samples("switchboard_call_start_step_seconds", {"step": "webhook"}) - webhooks_before == BURST
    assert lag_samples > 0, "the ingress samples its event loop's lag while it runs"


async def test_call_started_goes_out_on_the_admission_producer_not_the_audio_one(broker: EmbeddedBroker,
                                                                              tmp_path: Path) -> None:
    async with lone_ingress(broker, tmp_path) as ing:
        rt = ing.runtime
        ws, call_id = await twilio_call(ing)
        for _ in range(100):
            if call_id in rt.egress.sessions:
                break
            await asyncio.sleep(0.05)
        session = rt.egress.sessions[call_id]
        assert rt.admission_producer is not None and rt.admission_producer is not rt.producer
        assert session._start_publisher.producer is rt.admission_producer
        assert session.publisher.producer is rt.producer, "the call's other events stay in order with its audio"
        await ws.close()
