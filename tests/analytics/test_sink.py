"""The sink on a real broker and the embedded ClickHouse: every record lands once, redacted, and
poison records are dead-lettered instead of stopping the partition."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from calls_data import CARD, known_calls, sink_settings

from sinks.landing import LANDINGS, container, framed, landing_table, landing_value
from sinks.redact import Redactor
from sinks.report import StoreReader, run_reports
from sinks.sink import INPUTS, Sink
from sinks.store import Store
from switchboard import codec
from switchboard import records as r
from switchboard.bus import Correlation, Publisher, consumer_options, make_producer, topic_name
from switchboard.records import DeadLetter
from switchboard.settings import ServiceSettings
from switchboard.topics import DEADLETTER, TRANSCRIPTS

SAMPLES = {
    r.TurnEvent: r.TurnEvent("c1", 2, r.TurnEventKind.BARGE_IN, 10, 5, cancelled_turn_seq=1),
    r.TurnLatency: r.TurnLatency("c1", 2, 10, r.Timings(speech_end_us=5), response_ms=700.0),
    r.EngineUsage: r.EngineUsage("c1", "agent", "openai", 10, 2, llm_tokens_in=5, cost_usd=0.1),
    r.Transcript: r.Transcript("c1", 2, r.TranscriptKind.FINAL, f"card {CARD}", "en", 900, "whisper", 10,
                               confidence=0.9),
    r.AgentReply: r.AgentReply("c1", 2, 0, r.ReplyKind.SENTENCE, "Booked.", 0, "policy", 10, intent="book"),
}
TABLE_COUNTS = {"calls": 5, "turns": 4, "transcripts": 10, "engine_usage": 6, "call_summaries": 3}


async def publish_known_calls(bus: ServiceSettings, poison: bool = True) -> None:
    producer = make_producer(bus)
    await producer.start()
    try:
        pub = Publisher(bus, producer, "test")
        futures = [await pub.send(rec, Correlation(call_id=rec.call_id), topic=topic) for topic, rec in known_calls()]
        if poison:
            futures.append(await producer.send(topic_name(bus, TRANSCRIPTS), b"\x00garbage", key=b"c1"))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def counts(store: Store) -> dict[str, int]:
    out = {}
    for table in TABLE_COUNTS:
        out[table] = (await asyncio.to_thread(store.query, f"SELECT count() FROM {table} FINAL"))[1][0][0]
    return out


async def run_until_caught_up(sink: Sink, timeout_s: float = 45.0) -> None:
    task = asyncio.create_task(sink.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await sink.caught_up():
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, "sink did not catch up"
            await asyncio.sleep(0.2)
    finally:
        sink.stop()
        await asyncio.wait_for(task, 20)


@pytest.mark.timeout(120)
async def test_every_record_lands_once_redacted_even_when_a_second_group_replays_them(
    bus_settings: ServiceSettings, store: Store
) -> None:
    await publish_known_calls(bus_settings)
    await run_until_caught_up(Sink(sink_settings(bus_settings, store), store))
    assert await counts(store) == TABLE_COUNTS

    # A replay of every record (a new group starts from the beginning, as after a lost commit) adds nothing.
    await run_until_caught_up(Sink(sink_settings(bus_settings, store), store))
    assert await counts(store) == TABLE_COUNTS
    raw = store.query("SELECT count() FROM transcripts")[1][0][0]
    assert raw >= TABLE_COUNTS["transcripts"]

    _, texts = store.query("SELECT text FROM transcripts FINAL")
    joined = " ".join(t for (t,) in texts)
    assert CARD not in joined and "[CARD]" in joined and "[EMAIL]" in joined and "[PHONE]" in joined
    _, summary = store.query("SELECT summary FROM calls FINAL WHERE call_id = 'c1'")
    assert summary == [("Booked Tuesday 3 PM; card [CARD]",)]

    report = run_reports(StoreReader(store), ["recent_calls", "latency_percentiles"])
    assert "c1" in report and "response" in report


@pytest.mark.timeout(120)
async def test_a_poison_record_is_dead_lettered_counted_and_recorded_without_stopping_the_partition(
    bus_settings: ServiceSettings, store: Store
) -> None:
    from switchboard import metrics

    before = metrics.DEAD_LETTERS.labels("sink", "transcripts")._value.get()
    await publish_known_calls(bus_settings, poison=True)
    # the poison record went to the deadletter topic; the sink reads that too, so run until both are consumed
    sink = Sink(sink_settings(bus_settings, store), store)
    await run_until_caught_up(sink)
    await run_until_caught_up(Sink(sink.settings, store))  # picks up the dead letter the first run produced
    assert metrics.DEAD_LETTERS.labels("sink", "transcripts")._value.get() == before + 1
    assert (await counts(store))["transcripts"] == TABLE_COUNTS["transcripts"]

    consumer = AIOKafkaConsumer(topic_name(bus_settings, DEADLETTER), group_id=None,
                                **consumer_options(bus_settings))
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
        letters = [codec.decode(DeadLetter, m.value) for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    assert [(d.source_topic, d.service, d.value) for d in letters] == [("transcripts", "sink", b"\x00garbage")]
    _, rows = store.query("SELECT call_id, source, attributes['source_topic'] FROM events FINAL "
                          "WHERE kind = 'dead_letter'")
    assert rows == [("c1", "deadletter", "transcripts")]


def test_the_sink_reads_every_analytics_topic() -> None:
    assert {t.name for t in INPUTS} == {"calls", "turns", "transcripts", "replies", "latency", "usage",
                                         "deadletter", "summaries"}


def test_schema_creation_is_idempotent(store: Store) -> None:
    store.ensure_schema()
    store.ensure_schema()
    _, tables = store.query("SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name")
    analytics = [name for name, engine in tables if engine == "ReplacingMergeTree"]
    assert analytics == ["call_summaries", "calls", "engine_usage", "events", "reply_playback", "transcripts", "turns"]
    assert [name for name, engine in tables if engine == "View"] == ["agent_turns"]
    assert sorted(name for name, engine in tables if engine == "Null") == sorted(map(landing_table, LANDINGS))
    views = [name for name, engine in tables if engine == "MaterializedView"]
    assert sorted(views) == sorted(
        f"{landing_table(cls)}_to_{target}" for cls, landing in LANDINGS.items() for target in landing.targets)


@pytest.mark.parametrize("cls", LANDINGS, ids=lambda cls: cls.__name__)
def test_a_landing_table_has_the_columns_clickhouse_reads_from_the_records_container(
    store: Store, cls: type, tmp_path: Path
) -> None:
    path = tmp_path / "sample.avro"
    path.write_bytes(container(cls, [framed(3, 7, landing_value(cls, codec.encode(SAMPLES[cls]), Redactor()))]))
    inferred = store.query(f"DESCRIBE file('{path}', 'Avro')")[1]
    declared = store.query(f"DESCRIBE {landing_table(cls)}")[1]
    assert [(name, " ".join(kind.split())) for name, kind, *_ in inferred] == [
        (name, " ".join(kind.split())) for name, kind, *_ in declared]
