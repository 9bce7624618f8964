"""The ClickHouse sink: consume the pipeline's topics, buffer rows, insert in
batches, and commit Kafka offsets only after the insert succeeded.

Exactly once in effect: a crash between insert and commit redelivers the batch,
and the facts tables (ReplacingMergeTree keyed by the record's Kafka
coordinates) collapse the repeated rows; ``calls`` is recomputed from the
deduplicated facts, so recomputing it again changes nothing.

Records with text (transcripts, replies, call events, summaries, dead letters)
are decoded and redacted here; the others go to ClickHouse undecoded, which
turns them into rows itself (``sinks.landing``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from sinks import metrics as sink_metrics
from sinks.batch import Batch
from sinks.rows import RowBuilder
from sinks.settings import SinkSettings
from sinks.store import Store
from sinks.writer import write_facts
from switchboard import metrics
from switchboard.bus import Publisher, make_consumer, make_producer, topic_name
from switchboard.topics import CALLS, DEADLETTER, LATENCY, REPLIES, SUMMARIES, TRANSCRIPTS, TURNS, USAGE, Topic

logger = logging.getLogger(__name__)
SERVICE = "sink"
INPUTS: tuple[Topic, ...] = (CALLS, TURNS, TRANSCRIPTS, REPLIES, LATENCY, USAGE, DEADLETTER, SUMMARIES)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        metrics.ASSIGNED_PARTITIONS.labels(SERVICE).set(0)
        # Hand over cleanly: write and commit what we hold so the next owner does not redo it.
        try:
            await self.sink.flush(retry=False)
        except Exception:
            logger.warning("flush on revoke failed; the next owner will redo the batch", exc_info=True)
            self.sink.buffer = Batch()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.sink._committed.clear()  # another owner may have committed in between
        metrics.ASSIGNED_PARTITIONS.labels(SERVICE).set(len(assigned))
        logger.info("partitions assigned", extra={"fields": {"partitions": len(assigned)}})


SINK_IDLE_WAIT_MS = 5000  # the first rows after a quiet spell reach ClickHouse up to ~5 s later


class Sink:
    def __init__(self, settings: SinkSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.builder = RowBuilder(settings.redactor(), settings.caller_hash_salt)
        # the sink reads every topic (13 × the partition count): each of its empty fetches costs tansu the most of any
        # consumer, and it is off the voice path, so once idle it asks at most every SINK_IDLE_WAIT_MS (README: idle)
        idle = max(settings.fetch_idle_wait_ms, SINK_IDLE_WAIT_MS)
        self.consumer = make_consumer(settings.model_copy(update={"fetch_idle_wait_ms": idle}),
                                      group_id=settings.sink_group_id)
        self.producer = make_producer(settings)
        self.publisher = Publisher(settings, self.producer, SERVICE)
        self.by_name = {topic_name(settings, t): t for t in INPUTS}
        self._consumed = {t.name: metrics.RECORDS_CONSUMED.labels(SERVICE, t.name) for t in INPUTS}
        self.buffer = Batch()
        self._inflight: asyncio.Task[None] | None = None  # the write of the last batch
        self._older: asyncio.Task[None] | None = None  # the one before it, maybe still committing
        self._committed: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()

    async def caught_up(self) -> bool:
        """Every assigned partition committed up to its end: all that was produced is in ClickHouse."""
        parts = self.consumer.assignment()
        if not parts:
            return False
        ends = await self.consumer.end_offsets(list(parts))
        for tp in parts:
            # what this sink committed, else (one request per partition) what an earlier owner did
            if tp not in self._committed:
                self._committed[tp] = await self.consumer.committed(tp) or 0
            if self._committed[tp] < ends[tp]:
                return False
        return True

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self.producer.start()
        self.consumer.subscribe(list(self.by_name), listener=_Rebalance(self))
        await self.consumer.start()
        logger.info("sink started", extra={"fields": {"group": self.settings.sink_group_id, "dsn": self.store.dsn}})
        try:
            while not self._stopping.is_set():
                batch = await self.consumer.getmany(timeout_ms=self._wait_ms(),
                                                    max_records=self.settings.fetch_max_records)
                for tp, msgs in batch.items():
                    await self.add_many(self.by_name[tp.topic], tp, msgs)
                if self._due():
                    await self.flush_behind()
        finally:
            try:
                await self.flush(retry=False)
            except Exception:
                logger.warning("final flush failed; the batch will be redelivered", exc_info=True)
            finally:
                await self.consumer.stop()
                await self.producer.stop()
                logger.info("sink stopped")

    def _wait_ms(self) -> int:
        """How long a poll may wait for records: until the buffer is due, or briefly while it is due
        but held back by busy writes (see ``_due``)."""
        if self.buffer.empty():
            return 100
        left = self.settings.batch_max_seconds - (time.monotonic() - self.buffer.since)
        if left <= 0 and self._writes_busy():
            return 10
        return max(0, min(100, int(left * 1000)))

    def _writes_busy(self) -> bool:
        return self._older is not None and not self._older.done()

    def _due(self) -> bool:
        b = self.buffer
        if b.empty():
            return False
        if b.count < self.settings.batch_max_rows and time.monotonic() - b.since < self.settings.batch_max_seconds:
            return False
        # With two writes in flight a third would wait for the older one: read on into a bigger batch
        # instead (fewer, larger inserts, which ClickHouse prefers), up to twice the usual size.
        return not self._writes_busy() or b.count >= 2 * self.settings.batch_max_rows

    async def add_many(self, topic: Topic, tp: TopicPartition, msgs: list[ConsumerRecord]) -> None:
        """Buffer records of one partition; a record we cannot read goes to the dead-letter topic."""
        if not msgs:
            return
        self._consumed[topic.name].inc(len(msgs))
        for msg, error in self.buffer.add(topic.record, msgs, self.builder):
            await self._reject(topic, msg, error)
        # Marked last: a rebalance may flush while a dead letter is sent, and must not commit
        # offsets of records not yet buffered (the opposite only makes a duplicate, which collapses).
        self.buffer.consumed(tp, msgs[-1].offset, time.monotonic())

    async def _reject_written(self, msg: ConsumerRecord, error: str) -> None:
        await self._reject(self.by_name[msg.topic], msg, error)

    async def _reject(self, topic: Topic, msg: ConsumerRecord, error: str) -> None:
        if topic is DEADLETTER:
            # never dead-letter a dead letter: that would loop
            metrics.DEAD_LETTERS.labels(SERVICE, topic.name).inc()
            logger.warning("unreadable dead letter skipped", extra={"fields": {"offset": msg.offset}})
            return
        await self.publisher.dead_letter(msg, error)

    async def flush_behind(self) -> None:
        """Hand the buffer to a background write and go on consuming: ClickHouse works with the GIL
        released while the next batch is read. Two writes overlap at most, one inserting its
        facts while the one before it rebuilds ``calls`` and commits; commits stay in order."""
        if self._older is not None:
            await self._settle(self._older)
        batch, self.buffer = self.buffer, Batch()
        self._older = self._inflight
        self._inflight = asyncio.create_task(self._write_and_commit(batch, True, self._inflight))

    async def flush(self, retry: bool = True) -> None:
        """Write everything buffered (after the writes in flight) and commit its offsets."""
        if self._inflight is not None:
            await self._settle(self._inflight)
        batch, self.buffer = self.buffer, Batch()
        await self._write_and_commit(batch, retry, None)

    async def _settle(self, task: asyncio.Task[None]) -> None:
        try:
            await task  # a write awaits the one before it, so this settles every earlier one too
        except BaseException:
            # Its records were not committed, so nothing read after them may be: drop the buffer
            # and let the next owner of the partitions read them all again.
            self._inflight = self._older = None
            self.buffer = Batch()
            raise
        if task is self._inflight:
            self._inflight = self._older = None
        elif task is self._older:
            self._older = None

    async def _write_and_commit(self, b: Batch, retry: bool, previous: asyncio.Task[None] | None) -> None:
        """Insert the batch, rebuild its calls, commit its offsets (after the previous batch's).
        Retries while ClickHouse is unavailable."""
        started = time.monotonic()
        if not b.empty():
            await self._retrying(lambda: write_facts(self.store, b, self._reject_written), retry)
        if previous is not None:
            await previous  # its failure is ours: nothing may be committed past it
        if b.empty():
            return
        await self._retrying(lambda: asyncio.to_thread(self.store.rebuild_calls, b.call_ids), retry)
        if self.settings.commit_delay_s:
            await asyncio.sleep(self.settings.commit_delay_s)
        try:
            await self.consumer.commit(dict(b.offsets))
            self._committed.update(b.offsets)
        except KafkaError:
            # Rows are in; the redelivered records will be collapsed by the deduplicating tables.
            logger.warning("offset commit failed after insert; duplicates will collapse", exc_info=True)
        now_ms = time.time() * 1000
        for ts in b.timestamps():  # a sample is enough for a histogram
            sink_metrics.FRESHNESS.observe(max(0.0, now_ms - ts) / 1000)
        sink_metrics.FLUSH_SECONDS.observe(time.monotonic() - started)
        sink_metrics.BATCH_ROWS.observe(b.count)

    async def _retrying(self, step: Callable[[], Awaitable[None]], retry: bool) -> None:
        while True:
            try:
                await step()
                return
            except Exception:
                sink_metrics.FLUSH_FAILURES.inc()
                logger.warning("write to ClickHouse failed; offsets not committed", exc_info=True)
                if not retry or self._stopping.is_set():
                    raise
                await asyncio.sleep(self.settings.insert_retry_seconds)
