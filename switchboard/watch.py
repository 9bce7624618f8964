"""One call's records on the bus, as they are produced: what a test or a benchmark checks a call against.

Reads the given topics from their ends (so only what comes after ``__aenter__``), keeps the records whose key is
the call ID, decoded, in arrival order per partition. A call's records of one topic share a partition (keyed by
call ID), so each topic's records of the call are in the order they were produced.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from switchboard import codec
from switchboard.bus import consumer_options, topic_name
from switchboard.settings import ServiceSettings
from switchboard.topics import Topic

R = TypeVar("R")


class CallRecords:
    def __init__(
        self, settings: ServiceSettings, call_id: str, topics: tuple[Topic, ...], linger_s: float = 1.0
    ) -> None:
        self.settings, self.call_id, self.topics = settings, call_id, topics
        self.linger_s = linger_s  # kept reading after the block, for records still on their way
        self.records: list[Any] = []
        self.consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CallRecords:
        await self.consumer.start()
        kinds = {topic_name(self.settings, t): t.record for t in self.topics}
        tps = [TopicPartition(topic_name(self.settings, t), p) for t in self.topics for p in range(t.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve positions now, before the call produces anything
            await self.consumer.position(tp)
        key = self.call_id.encode()

        async def run() -> None:
            while True:
                for tp, msgs in (await self.consumer.getmany(timeout_ms=100)).items():
                    self.records += [codec.decode(kinds[tp.topic], m.value) for m in msgs if m.key == key]

        self.task = asyncio.create_task(run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(self.linger_s)
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()

    def of(self, kind: type[R]) -> list[R]:
        """The records of one type (``TurnEvent``, ``AgentReply``…), in arrival order."""
        return [r for r in self.records if isinstance(r, kind)]
