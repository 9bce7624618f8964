"""The thin runner every processor shares: consume, decode, call the logic,
produce what it yields, commit only after the outputs are acknowledged.

A processor's logic is a plain async transform of typed records (see
``Processor``), unit-tested without Kafka; this module owns the wiring.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import start_http_server

from switchboard import codec, metrics
from switchboard.bus import Correlation, Publisher, make_consumer, make_producer, topic_name
from switchboard.logs import correlation
from switchboard.settings import ServiceSettings
from switchboard.topics import Topic

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Incoming:
    record: Any
    corr: Correlation
    topic: Topic
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(slots=True)
class Out:
    """One record to publish; ``partition`` only for reply-partition topics."""

    record: Any
    corr: Correlation
    partition: int | None = None


class Processor(Protocol):
    name: str
    inputs: tuple[Topic, ...]

    def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        """Transform one input record into the records to publish."""
        ...

    async def on_assigned(self, partitions: set[int]) -> None: ...

    async def on_revoked(self, partitions: set[int]) -> None: ...

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        """The lowest offset of ``topic``/``partition`` still needed (e.g. the first chunk of an
        open turn), so a rebalance replays it on the new owner; None when nothing is held."""
        ...


class Watcher(Protocol):
    """Optional for a processor: records it must see *while* ``handle`` is busy (a barge-in
    cancelling a streaming reply). They are read by a second consumer on the same partition
    numbers as the group assignment, from their end, and also arrive in ``handle`` as usual."""

    watch: tuple[Topic, ...]

    async def on_watched(self, record: Any) -> None: ...


class _Watch:
    """The watcher consumer: follows the group's partitions, never commits."""

    def __init__(self, settings: ServiceSettings, processor: Any) -> None:
        self.settings = settings
        self.processor = processor
        self.topics = {topic_name(settings, t): t for t in processor.watch}
        self.consumer = make_consumer(settings, group_id=None)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.task = asyncio.create_task(self._run(), name="watch")

    async def follow(self, partitions: set[int]) -> None:
        tps = [TopicPartition(name, p) for name in self.topics for p in partitions]
        self.consumer.assign(tps)
        if tps:
            await self.consumer.seek_to_end(*tps)

    async def _run(self) -> None:
        while True:
            if not self.consumer.assignment():
                await asyncio.sleep(0.05)
                continue
            for tp, msgs in (await self.consumer.getmany(timeout_ms=100)).items():
                topic = self.topics[tp.topic]
                for msg in msgs:
                    try:
                        await self.processor.on_watched(codec.decode(topic.record, msg.value))
                    except Exception:  # the group consumer dead-letters it; here it is only a hint
                        logger.exception("watched record failed")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        metrics.ASSIGNED_PARTITIONS.labels(self.runner.processor.name).set(0)
        await self.runner.commit_pending()
        await self.runner.processor.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in assigned}
        metrics.ASSIGNED_PARTITIONS.labels(self.runner.processor.name).set(len(assigned))
        logger.info("partitions assigned", extra={"fields": {"partitions": sorted(parts)}})
        if self.runner.watch is not None:
            await self.runner.watch.follow(parts)
        await self.runner.processor.on_assigned(parts)


class Runner:
    def __init__(self, settings: ServiceSettings, processor: Processor, group_id: str | None = None) -> None:
        self.settings = settings
        self.processor = processor
        self.group_id = group_id or f"switchboard-{processor.name}"
        self.consumer = make_consumer(settings, group_id=self.group_id)
        self.producer = make_producer(settings)
        self.publisher = Publisher(settings, self.producer, processor.name)
        self._pending: dict[TopicPartition, int] = {}
        self._topics = {topic_name(settings, t): t for t in processor.inputs}
        self._stopping = asyncio.Event()
        self.watch = _Watch(settings, processor) if getattr(processor, "watch", ()) else None

    async def commit_pending(self) -> None:
        if not self._pending:
            return
        offsets, self._pending = self._pending, {}
        for tp, offset in list(offsets.items()):
            floor = self.processor.commit_floor(self._topics[tp.topic], tp.partition)
            if floor is not None and floor < offset:
                offsets[tp] = floor
        await self.consumer.commit(offsets)

    def stop(self) -> None:
        self._stopping.set()

    async def _handle(self, msg: ConsumerRecord, topic: Topic) -> list[asyncio.Future[Any]]:
        try:
            record = codec.decode(topic.record, msg.value)
        except codec.DecodeError as exc:
            await self.publisher.dead_letter(msg, str(exc))
            return []
        corr = Correlation.from_headers(msg.headers)
        incoming = Incoming(record, corr, topic, msg.partition, msg.offset, msg.timestamp)
        futures: list[asyncio.Future[Any]] = []
        with correlation(**corr.log_ids()):
            try:
                async for out in self.processor.handle(incoming):
                    futures.append(await self.publisher.send(out.record, out.corr, partition=out.partition))
            except Exception as exc:
                logger.exception("processing failed")
                await self.publisher.dead_letter(msg, f"{type(exc).__name__}: {exc}")
        return futures

    async def run(self) -> None:
        await self.producer.start()
        if self.watch is not None:
            await self.watch.start()
        names = list(self._topics)
        by_name = self._topics
        self.consumer.subscribe(names, listener=_Rebalance(self))
        await self.consumer.start()
        logger.info("processor started", extra={"fields": {"group": self.group_id, "topics": names}})
        try:
            while not self._stopping.is_set():
                batch = await self.consumer.getmany(timeout_ms=100, max_records=500)
                now_ms = time.time() * 1000
                # Outputs of the whole batch are in flight together; offsets are committed
                # once all of them are acknowledged (waiting per record would cap
                # throughput at one broker round trip per input record).
                in_flight: list[asyncio.Future[Any]] = []
                for tp, msgs in batch.items():
                    topic = by_name[tp.topic]
                    hop = metrics.BUS_HOP.labels(self.processor.name, topic.name)
                    for msg in msgs:
                        hop.observe(max(0.0, now_ms - msg.timestamp) / 1000)
                        metrics.RECORDS_CONSUMED.labels(self.processor.name, topic.name).inc()
                        in_flight += await self._handle(msg, topic)
                        self._pending[tp] = msg.offset + 1
                if in_flight:
                    await asyncio.gather(*in_flight)
                await self.commit_pending()
        finally:
            try:
                await self.commit_pending()
            finally:
                if self.watch is not None:
                    await self.watch.stop()
                await self.consumer.stop()
                await self.producer.stop()
                logger.info("processor stopped")


def serve(settings: ServiceSettings, processor: Processor) -> None:
    """Run a processor until SIGINT/SIGTERM: the body of every processor's ``main()``."""

    async def main() -> None:
        if settings.metrics_port:
            start_http_server(settings.metrics_port, addr=settings.metrics_host)
        runner = Runner(settings, processor)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop)
        await runner.run()

    asyncio.run(main())
