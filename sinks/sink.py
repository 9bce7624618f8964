"""The ClickHouse sink: consume the pipeline's topics, buffer rows, insert in
batches, and commit Kafka offsets only after the insert succeeded.

Exactly once in effect: a crash between insert and commit redelivers the batch,
and the facts tables (ReplacingMergeTree keyed by the record's Kafka
coordinates) collapse the repeated rows; ``calls`` is recomputed from the
deduplicated facts, so recomputing it again changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.exceptions import OperationalError

from sinks import metrics as sink_metrics
from sinks.rows import COLUMNS, RowBuilder
from sinks.settings import SinkSettings
from sinks.store import Store
from switchboard import codec, metrics
from switchboard.bus import Publisher, make_consumer, make_producer, topic_name
from switchboard.topics import CALLS, DEADLETTER, LATENCY, REPLIES, SUMMARIES, TRANSCRIPTS, TURNS, USAGE, Topic

logger = logging.getLogger(__name__)
SERVICE = "sink"
INPUTS: tuple[Topic, ...] = (CALLS, TURNS, TRANSCRIPTS, REPLIES, LATENCY, USAGE, DEADLETTER, SUMMARIES)
CALL_FACTS = frozenset({"events", "engine_usage", "call_summaries"})  # the tables `calls` is computed from


@dataclass(slots=True)
class Buffer:
    """Rows waiting for the next flush, with the records they came from (for dead-lettering one bad row)."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    origins: dict[str, list[ConsumerRecord]] = field(default_factory=dict)
    call_ids: set[str] = field(default_factory=set)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    produced_ms: list[int] = field(default_factory=list)
    count: int = 0
    since: float = 0.0  # monotonic time of the oldest unflushed record

    def empty(self) -> bool:
        return not self.offsets


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
            self.sink.buffer = Buffer()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        metrics.ASSIGNED_PARTITIONS.labels(SERVICE).set(len(assigned))
        logger.info("partitions assigned", extra={"fields": {"partitions": len(assigned)}})


class Sink:
    def __init__(self, settings: SinkSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.builder = RowBuilder(settings.redactor(), settings.caller_hash_salt)
        self.consumer = make_consumer(settings, group_id=settings.sink_group_id)
        self.producer = make_producer(settings)
        self.publisher = Publisher(settings, self.producer, SERVICE)
        self.by_name = {topic_name(settings, t): t for t in INPUTS}
        self._consumed = {t.name: metrics.RECORDS_CONSUMED.labels(SERVICE, t.name) for t in INPUTS}
        self.buffer = Buffer()
        self._stopping = asyncio.Event()

    async def caught_up(self) -> bool:
        """Every assigned partition committed up to its end: all that was produced is in ClickHouse."""
        parts = self.consumer.assignment()
        if not parts:
            return False
        ends = await self.consumer.end_offsets(list(parts))
        for tp in parts:
            if (await self.consumer.committed(tp) or 0) < ends[tp]:
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
                wait_ms = 100
                if not self.buffer.empty():
                    left = self.settings.batch_max_seconds - (time.monotonic() - self.buffer.since)
                    wait_ms = max(0, min(wait_ms, int(left * 1000)))
                batch = await self.consumer.getmany(timeout_ms=wait_ms, max_records=self.settings.fetch_max_records)
                for tp, msgs in batch.items():
                    topic = self.by_name[tp.topic]
                    for msg in msgs:
                        await self.add(topic, tp, msg)
                if self._due():
                    await self.flush()
        finally:
            try:
                if not self.buffer.empty():
                    await self.flush(retry=False)
            except Exception:
                logger.warning("final flush failed; the batch will be redelivered", exc_info=True)
            finally:
                await self.consumer.stop()
                await self.producer.stop()
                logger.info("sink stopped")

    def _due(self) -> bool:
        b = self.buffer
        if b.empty():
            return False
        return b.count >= self.settings.batch_max_rows or time.monotonic() - b.since >= self.settings.batch_max_seconds

    async def add(self, topic: Topic, tp: TopicPartition, msg: ConsumerRecord) -> None:
        """Buffer one record's rows; a record we cannot read goes to the dead-letter topic."""
        self._consumed[topic.name].inc()
        b = self.buffer
        if b.empty():
            b.since = time.monotonic()
        b.offsets[tp] = msg.offset + 1
        try:
            record = codec.decode(topic.record, msg.value)
            rows = self.builder.build(record, msg.partition, msg.offset)
        except Exception as exc:
            await self._reject(topic, msg, f"{type(exc).__name__}: {exc}")
            return
        for table, table_rows in rows.tables.items():
            b.rows.setdefault(table, []).extend(table_rows)
            b.origins.setdefault(table, []).extend([msg] * len(table_rows))
            b.count += len(table_rows)
        if rows.call_id and not CALL_FACTS.isdisjoint(rows.tables):
            b.call_ids.add(rows.call_id)
        b.produced_ms.append(msg.timestamp)

    async def _reject(self, topic: Topic, msg: ConsumerRecord, error: str) -> None:
        if topic is DEADLETTER:
            # never dead-letter a dead letter: that would loop
            metrics.DEAD_LETTERS.labels(SERVICE, topic.name).inc()
            logger.warning("unreadable dead letter skipped", extra={"fields": {"offset": msg.offset}})
            return
        await self.publisher.dead_letter(msg, error)

    async def flush(self, retry: bool = True) -> None:
        """Insert the buffer, then commit its offsets. Retries while ClickHouse is unavailable."""
        b = self.buffer
        if b.empty():
            return
        started = time.monotonic()
        while True:
            try:
                await self._write(b)
                break
            except Exception:
                sink_metrics.FLUSH_FAILURES.inc()
                logger.warning("insert failed; offsets not committed", exc_info=True)
                if not retry or self._stopping.is_set():
                    raise
                await asyncio.sleep(self.settings.insert_retry_seconds)
        if self.settings.commit_delay_s:
            await asyncio.sleep(self.settings.commit_delay_s)
        try:
            await self.consumer.commit(dict(b.offsets))
        except KafkaError:
            # Rows are in; the redelivered records will be collapsed by the deduplicating tables.
            logger.warning("offset commit failed after insert; duplicates will collapse", exc_info=True)
        now_ms = time.time() * 1000
        for ts in b.produced_ms[:: max(1, len(b.produced_ms) // 100)]:  # a sample is enough for a histogram
            sink_metrics.FRESHNESS.observe(max(0.0, now_ms - ts) / 1000)
        sink_metrics.FLUSH_SECONDS.observe(time.monotonic() - started)
        sink_metrics.BATCH_ROWS.observe(b.count)
        if b is self.buffer:
            self.buffer = Buffer()

    async def _write(self, b: Buffer) -> None:
        for table, rows in b.rows.items():
            try:
                await asyncio.to_thread(self.store.insert, table, COLUMNS[table], rows)
            except OperationalError:
                raise
            except Exception as exc:
                # Maybe one bad row: find it row by row, dead-letter it, keep the rest.
                good = await self._insert_one_by_one(table, rows, b.origins[table], exc)
                b.rows[table], b.origins[table] = [row for row, _ in good], [msg for _, msg in good]
            sink_metrics.ROWS_INSERTED.labels(table).inc(len(rows))
        await asyncio.to_thread(self.store.rebuild_calls, b.call_ids)

    async def _insert_one_by_one(
        self, table: str, rows: list[tuple[Any, ...]], origins: list[ConsumerRecord], first: Exception
    ) -> list[tuple[tuple[Any, ...], ConsumerRecord]]:
        bad: list[tuple[ConsumerRecord, str]] = []
        good: list[tuple[tuple[Any, ...], ConsumerRecord]] = []
        for row, msg in zip(rows, origins, strict=True):
            try:
                await asyncio.to_thread(self.store.insert, table, COLUMNS[table], [row])
                good.append((row, msg))
            except Exception as exc:
                bad.append((msg, f"insert into {table}: {type(exc).__name__}: {exc}"))
        if not good:
            raise first  # every row failed: the database is the problem, not the data
        for msg, error in bad:
            await self._reject(self.by_name[msg.topic], msg, error)
        return good
