"""The sink's flush contract, without Kafka, on both of its paths (records ClickHouse decodes itself
and records built in Python): offsets are committed only after the insert succeeded, a ClickHouse
outage is retried without losing the batch, and a bad record is dead-lettered alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.exceptions import OperationalError

from sinks.batch import Batch
from sinks.redact import Redactor
from sinks.rows import RowBuilder
from sinks.settings import SinkSettings
from sinks.sink import Sink
from sinks.store import Store
from switchboard import codec
from switchboard import records as r
from switchboard.topics import CALLS, TRANSCRIPTS, TURNS


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


def turn_event(offset: int, turn: int) -> ConsumerRecord:
    """A record ClickHouse decodes itself (landed)."""
    value = codec.encode(r.TurnEvent("c1", turn, r.TurnEventKind.END_OF_TURN, r.now_us() + turn, 1))
    return ConsumerRecord("t.turns", 0, offset, 0, 0, b"c1", value, None, 0, len(value), [])


def transcript(offset: int, turn: int) -> ConsumerRecord:
    """A record whose text the sink redacts, and ClickHouse decodes the rest of."""
    value = codec.encode(r.Transcript("c1", turn, r.TranscriptKind.FINAL, "hello", "en", 500, "whisper", r.now_us()))
    return ConsumerRecord("t.transcripts", 0, offset, 0, 0, b"c1", value, None, 0, len(value), [])


def call_event(offset: int, turn: int) -> ConsumerRecord:
    """A record the sink decodes and turns into a row in Python."""
    value = codec.encode(r.CallEvent("c1", "s", r.CallEventKind.DTMF, r.now_us(), "twilio", "clinic", "en-US", "n", 0,
                                     turn_seq=turn, reason="1"))
    return ConsumerRecord("t.calls", 0, offset, 0, 0, b"c1", value, None, 0, len(value), [])


async def make_sink(store: Store, **settings_: Any) -> tuple[Sink, FakeConsumer, FakePublisher]:
    settings = SinkSettings(clickhouse_dsn=store.dsn, clickhouse_database=store.database, topic_prefix="t.",
                            insert_retry_seconds=0.01, query_port=0, **settings_)
    sink = Sink(settings, store)
    consumer, publisher = FakeConsumer(), FakePublisher()
    sink.consumer, sink.publisher = consumer, publisher  # type: ignore[assignment]
    await sink.producer.stop()  # never started: dead letters go to the fake publisher
    return sink, consumer, publisher


PATHS = {
    "landed": (TURNS, turn_event, "insert_avro", "SELECT turn_seq FROM events FINAL ORDER BY turn_seq"),
    "landed with text": (TRANSCRIPTS, transcript, "insert_avro",
                         "SELECT turn_seq FROM transcripts FINAL ORDER BY turn_seq"),
    "built": (CALLS, call_event, "insert", "SELECT turn_seq FROM events FINAL ORDER BY turn_seq"),
}


@pytest.mark.parametrize("path", PATHS)
async def test_offsets_are_committed_only_after_clickhouse_accepted_the_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    topic, make, method, query = PATHS[path]
    sink, consumer, _ = await make_sink(store)
    tp = TopicPartition(f"t.{topic.name}", 0)
    await sink.add_many(topic, tp, [make(i, i) for i in range(3)])
    real_insert = getattr(store, method)
    failures = 2

    def flaky(*args: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            assert consumer.commits == []  # nothing committed while ClickHouse is down
            raise OperationalError("connection refused")
        real_insert(*args)

    monkeypatch.setattr(store, method, flaky)
    await asyncio.wait_for(sink.flush(), 10)
    assert failures == 0
    assert consumer.commits == [{tp: 3}]
    assert store.query(query)[1] == [(0,), (1,), (2,)]
    assert sink.buffer.empty()


async def test_a_row_clickhouse_cannot_take_is_dead_lettered_and_the_rest_inserted(store: Store) -> None:
    sink, consumer, publisher = await make_sink(store)
    tp = TopicPartition("t.calls", 0)
    await sink.add_many(CALLS, tp, [call_event(i, i) for i in range(5)])
    rows = sink.buffer.rows["events"]
    rows[3] = (*rows[3][:4], "not a turn number", *rows[3][5:])  # turn_seq column
    await sink.flush()
    assert [offset for offset, _ in publisher.dead] == [3]
    assert "insert into events" in publisher.dead[0][1]
    assert store.query(PATHS["built"][3])[1] == [(0,), (1,), (2,), (4,)]
    assert consumer.commits == [{tp: 5}]


@pytest.mark.parametrize("path", PATHS)
async def test_an_unreadable_record_is_dead_lettered_and_its_offset_still_committed(store: Store, path: str) -> None:
    topic, make, _, query = PATHS[path]
    sink, consumer, publisher = await make_sink(store)
    tp = TopicPartition(f"t.{topic.name}", 0)
    cut_short = make(2, 2)
    cut_short = ConsumerRecord(cut_short.topic, 0, 2, 0, 0, b"c1", cut_short.value[:-3], None, 0, 0, [])
    not_avro = ConsumerRecord(cut_short.topic, 0, 0, 0, 0, b"c1", b"\x01\x02", None, 0, 2, [])
    await sink.add_many(topic, tp, [not_avro, make(1, 1), cut_short, make(3, 3)])
    await sink.flush()
    assert sorted(offset for offset, _ in publisher.dead) == [0, 2]
    assert all("DecodeError" in error for _, error in publisher.dead)
    assert store.query(query)[1] == [(1,), (3,)]
    assert consumer.commits == [{tp: 4}]


def before_first_rebuild(store: Store, monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]) -> None:
    """Run ``hook`` when the first batch rebuilds its calls, then rebuild as usual."""
    real_rebuild = store.rebuild_calls
    calls = 0

    def rebuild(ids: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            hook()
        real_rebuild(ids)

    monkeypatch.setattr(store, "rebuild_calls", rebuild)


async def two_overlapping_writes(sink: Sink, tp: TopicPartition) -> None:
    await sink.add_many(TURNS, tp, [turn_event(0, 0), turn_event(1, 1)])
    await sink.flush_behind()
    await sink.add_many(TURNS, tp, [turn_event(2, 2)])
    await sink.flush_behind()


async def test_overlapping_writes_commit_in_order_even_when_the_first_is_slower(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, consumer, _ = await make_sink(store)
    tp = TopicPartition("t.turns", 0)
    # the first batch's calls rebuild outlasts the second batch's inserts
    before_first_rebuild(store, monkeypatch, lambda: time.sleep(0.5))
    await two_overlapping_writes(sink, tp)
    await asyncio.wait_for(sink.flush(), 10)
    assert consumer.commits == [{tp: 2}, {tp: 3}]
    assert store.query(PATHS["landed"][3])[1] == [(0,), (1,), (2,)]


async def test_a_batch_is_not_committed_when_the_one_before_it_failed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, consumer, _ = await make_sink(store)
    tp = TopicPartition("t.turns", 0)

    def give_up() -> None:
        sink.stop()  # no more retries: the write of the first batch fails for good
        raise OperationalError("connection refused")

    before_first_rebuild(store, monkeypatch, give_up)
    await two_overlapping_writes(sink, tp)
    with pytest.raises(OperationalError):
        await asyncio.wait_for(sink.flush(), 10)
    assert consumer.commits == []  # the second batch's offsets would skip the first batch's records
    assert sink.buffer.empty()


async def test_while_two_writes_are_busy_the_sink_reads_on_into_a_bigger_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, consumer, _ = await make_sink(store, batch_max_rows=2)
    tp = TopicPartition("t.turns", 0)
    release = threading.Event()
    before_first_rebuild(store, monkeypatch, lambda: release.wait(10))
    await two_overlapping_writes(sink, tp)
    await sink.add_many(TURNS, tp, [turn_event(3, 3), turn_event(4, 4)])
    assert not sink._due()  # a full batch, but a third write would only wait for the first
    await sink.add_many(TURNS, tp, [turn_event(5, 5), turn_event(6, 6)])
    assert sink._due()  # twice the batch size: now it waits (back-pressure) rather than grow
    release.set()
    await asyncio.wait_for(sink.flush(), 10)
    assert consumer.commits == [{tp: 2}, {tp: 3}, {tp: 7}]
    assert store.query(PATHS["landed"][3])[1] == [(i,) for i in range(7)]


def test_a_batch_rebuilds_the_calls_of_the_records_calls_are_computed_from_and_only_those() -> None:
    def keyed(make: Callable[[int, int], ConsumerRecord], key: bytes) -> ConsumerRecord:
        m = make(0, 1)
        return ConsumerRecord(m.topic, 0, 0, 0, 0, key, m.value, None, 0, len(m.value), [])

    batch, builder = Batch(), RowBuilder(Redactor())
    batch.add(r.Transcript, [keyed(transcript, b"only-a-transcript")], builder)  # → transcripts
    batch.add(r.TurnEvent, [keyed(turn_event, b"a-turn-event")], builder)  # → events
    batch.add(r.CallEvent, [call_event(0, 1)], builder)  # → events, call c1
    assert batch.call_ids == {"a-turn-event", "c1"}
