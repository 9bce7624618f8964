"""Small helpers of the channel tests: close codes, counters, reading a topic back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import websockets
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from switchboard import codec
from switchboard.bus import consumer_options, topic_name
from switchboard.settings import ServiceSettings
from switchboard.topics import Topic


async def closed_with(ws: Any, timeout_s: float = 5.0) -> tuple[int | None, str]:
    """Read until the server closes the socket; its close code and reason."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout_s)
    except websockets.ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")


def bad_input(channel: str, reason: str) -> float:
    return REGISTRY.get_sample_value("switchboard_bad_input_total", {"channel": channel, "reason": reason}) or 0.0


async def records_of(settings: ServiceSettings, topic: Topic, call_id: str, *, at_least: int = 1,
                     timeout_s: float = 10.0) -> list[Any]:
    """Records of one call on a topic, from the beginning; waits until ``at_least`` have arrived."""
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    try:
        name = topic_name(settings, topic)
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < at_least and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                found += [codec.decode(topic.record, m.value) for m in msgs if m.key == call_id.encode()]
        return found
    finally:
        await consumer.stop()
