"""The sink's flush contract, without Kafka: offsets are committed only after the insert succeeded,
a ClickHouse outage is retried without losing the batch, one bad row is dead-lettered alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.exceptions import OperationalError

from sinks.settings import SinkSettings
from sinks.sink import Sink
from sinks.store import Store
from switchboard import codec
from switchboard import records as r
from switchboard.topics import TURNS


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


class FakePublisher:
    def __init__(self) -> None:
        self.dead: list[tuple[int, str]] = []

    async def dead_letter(self, msg: ConsumerRecord, error: str) -> None:
        self.dead.append((msg.offset, error))


def record(offset: int, turn: int) -> ConsumerRecord:
    value = codec.encode(r.TurnEvent("c1", turn, r.TurnEventKind.END_OF_TURN, r.now_us() + turn, 1))
    return ConsumerRecord("t.turns", 0, offset, 0, 0, b"c1", value, None, 0, len(value), [])


def make_sink(store: Store) -> tuple[Sink, FakeConsumer, FakePublisher]:
    settings = SinkSettings(clickhouse_dsn=store.dsn, clickhouse_database=store.database, topic_prefix="t.",
                            insert_retry_seconds=0.01, query_port=0)
    sink = Sink(settings, store)
    consumer, publisher = FakeConsumer(), FakePublisher()
    sink.consumer, sink.publisher = consumer, publisher  # type: ignore[assignment]
    return sink, consumer, publisher


async def test_offsets_are_committed_only_after_clickhouse_accepted_the_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, consumer, _ = make_sink(store)
    tp = TopicPartition("t.turns", 0)
    for i in range(3):
        await sink.add(TURNS, tp, record(i, i))
    real_insert = store.insert
    failures = 2

    def flaky(*args: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            assert consumer.commits == []  # nothing committed while ClickHouse is down
            raise OperationalError("connection refused")
        real_insert(*args)

    monkeypatch.setattr(store, "insert", flaky)
    await asyncio.wait_for(sink.flush(), 10)
    assert failures == 0
    assert consumer.commits == [{tp: 3}]
    assert store.query("SELECT count() FROM events FINAL")[1] == [(3,)]
    assert sink.buffer.empty()


async def test_a_row_clickhouse_cannot_take_is_dead_lettered_and_the_rest_inserted(store: Store) -> None:
    sink, consumer, publisher = make_sink(store)
    tp = TopicPartition("t.turns", 0)
    for i in range(3):
        await sink.add(TURNS, tp, record(i, i))
    rows = sink.buffer.rows["events"]
    rows[1] = (*rows[1][:4], "not a turn number", *rows[1][5:])  # turn_seq column
    await sink.flush()
    assert [offset for offset, _ in publisher.dead] == [1]
    assert "insert into events" in publisher.dead[0][1]
    assert store.query("SELECT turn_seq FROM events FINAL ORDER BY turn_seq")[1] == [(0,), (2,)]
    assert consumer.commits == [{tp: 3}]


async def test_an_unreadable_record_is_dead_lettered_and_its_offset_still_committed(store: Store) -> None:
    sink, consumer, publisher = make_sink(store)
    tp = TopicPartition("t.turns", 0)
    bad = ConsumerRecord("t.turns", 0, 0, 0, 0, b"c1", b"\x01\x02", None, 0, 2, [])
    await sink.add(TURNS, tp, bad)
    await sink.add(TURNS, tp, record(1, 1))
    await sink.flush()
    assert [offset for offset, _ in publisher.dead] == [0]
    assert consumer.commits == [{tp: 2}]
