"""Benchmark of the ClickHouse sink on the embedded stack: sustained insert
throughput (rows/s) and freshness (record produced → visible to a query).

    .venv/bin/python bench/sink_throughput.py [--records 1000000] [--rate 2000] [--seconds 15]

1. throughput: a backlog of pipeline records (8-turn booking calls: turn events,
   final transcripts, 3 of 8 with PII, agent sentences, turn latencies, engine
   usage, call events; 74 rows a call) is produced to a tansu broker first; the
   sink then drains it into a fresh embedded chDB. The figure is rows inserted /
   time from the first record consumed to the last offset committed (everything
   included: fetch, redaction, Avro decoding in ClickHouse, inserts, calls
   rebuild, commit). The write alone (batch → ClickHouse) is timed too.
2. freshness: records produced at a steady rate while the sink runs; a reader
   polls ClickHouse and notes when each record became visible to a query.
Medians of --repeat runs are printed with the batch settings used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from sinks.batch import Batch
from sinks.main import tune_gc
from sinks.rows import RowBuilder
from sinks.settings import SinkSettings
from sinks.sink import Sink
from sinks.store import Store
from sinks.writer import write
from switchboard import codec
from switchboard import records as r
from switchboard.broker import EmbeddedBroker
from switchboard.bus import create_topics, topic_name
from switchboard.settings import ServiceSettings
from switchboard.topics import topic_for

FACTS = ("events", "turns", "transcripts", "engine_usage", "call_summaries")  # the tables records land in
# What the caller says in the 8 turns of a booking call with a payment; 3 of the 8 carry PII
# (a phone number, a card number, an e-mail address), so redaction does real work.
CALLER = (
    "Hi, I'd like to book an appointment please.",
    "Tuesday, if you have anything.",
    "Ten in the morning would be great.",
    "It's Jane Doe, and my phone number is 415 555 2671.",
    "Yes, that's right.",
    "Can I pay the deposit now? My card number is 4111 1111 1111 1111.",
    "And send the receipt to jane.doe@example.com please.",
    "No thanks, that's all. Goodbye.",
)
AGENT = (
    ("Of course. Which day suits you?", "We have Tuesday at 10 AM or 2 PM."),
    ("Ten on Tuesday it is.", "May I have your name and a phone number?"),
    ("Thank you, Jane.", "Just to confirm, Tuesday at 10 AM. Is that right?"),
    ("You're booked.", "Would you like to pay the deposit now?"),
)


def call_records(call: int, now: int) -> list[Any]:
    """One call of 8 turns: 74 records → 74 rows (partials and reply ends make no rows and are not produced)."""
    cid = f"bench-{call}"
    out: list[Any] = [r.CallEvent(cid, "s", r.CallEventKind.CALL_STARTED, now, "twilio", "clinic", "en-US", "n", 0,
                                  caller_number="+14155552671")]
    for t in range(1, 9):
        ts = now + t * 1_000_000
        timings = r.Timings(speech_start_us=ts - 900_000, speech_end_us=ts - 300_000, turn_detected_us=ts,
                            egress_first_audio_us=ts + 500_000)
        out += [
            r.TurnEvent(cid, t, r.TurnEventKind.SPEECH_STARTED, ts - 900_000, ts - 900_000),
            r.TurnEvent(cid, t, r.TurnEventKind.END_OF_TURN, ts, ts - 900_000, ts - 300_000),
            r.Transcript(cid, t, r.TranscriptKind.FINAL, CALLER[t - 1], "en", 600, "whisper", ts + 200_000),
            r.AgentReply(cid, t, 0, r.ReplyKind.SENTENCE, AGENT[(t - 1) // 2][0], 0, "policy", ts + 210_000,
                         intent="book"),
            r.AgentReply(cid, t, 1, r.ReplyKind.SENTENCE, AGENT[(t - 1) // 2][1], 0, "policy", ts + 211_000,
                         intent="book"),
            r.TurnLatency(cid, t, ts + 500_000, timings, 800.0, 500.0, 200.0, 10.0, 150.0, 140.0),
            r.EngineUsage(cid, "stt", "whisper", ts + 200_000, t, stt_audio_seconds=0.6),
            r.EngineUsage(cid, "agent", "policy", ts + 210_000, t),
            r.EngineUsage(cid, "tts", "piper", ts + 400_000, t, tts_characters=48),
        ]
    out.append(r.CallEvent(cid, "s", r.CallEventKind.CALL_ENDED, now + 10_000_000, "twilio", "clinic", "en-US", "n",
                           0, reason="hangup"))
    return out


async def produce_backlog(settings: ServiceSettings, n_records: int) -> int:
    # The load generator batches (linger) to build the backlog quickly; the pipeline's producers do not.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, max_batch_size=512 * 1024,
                                acks=1)
    await producer.start()
    sent, call, now = 0, 0, r.now_us()
    try:
        pending = []
        while sent < n_records:
            for rec in call_records(call, now):
                pending.append(await producer.send(topic_name(settings, topic_for(type(rec))), codec.encode(rec),
                                                   key=rec.call_id.encode()))
                sent += 1
            call += 1
            if len(pending) > 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def insert_path(store: Store, redactor: Any, batch_rows: int, batches: int) -> float:
    """Sustained rows/s of the write alone (``sinks.writer.write``, what the sink does per batch: one
    insert per table, one Avro insert per landing table, the calls rebuild) on batches prepared
    beforehand, so Kafka, Avro decoding and redaction are left out."""
    builder = RowBuilder(redactor)
    prepared = []
    call, offset, now = 10**6, 0, r.now_us()
    for _ in range(batches):
        batch = Batch()
        while batch.count < batch_rows:
            for rec in call_records(call, now):
                value = codec.encode(rec)
                msg = ConsumerRecord("bench", 0, offset, 0, 0, rec.call_id.encode(), value, None, 0, len(value), [])
                assert batch.add(type(rec), [msg], builder) == []
                offset += 1
            call += 1
        prepared.append(batch)

    async def refuse(msg: ConsumerRecord, error: str) -> None:
        raise RuntimeError(error)

    t0 = time.perf_counter()
    for batch in prepared:
        await write(store, batch, refuse)
    return sum(b.count for b in prepared) / (time.perf_counter() - t0)


class TimedSink(Sink):
    first_record: float | None = None

    async def add_many(self, *args: Any) -> None:
        if self.first_record is None:
            self.first_record = time.perf_counter()
        await super().add_many(*args)


def sink_settings(base: ServiceSettings, dsn: str, db: str, args: argparse.Namespace) -> SinkSettings:
    return SinkSettings(kafka_bootstrap=base.kafka_bootstrap, topic_prefix=base.topic_prefix, clickhouse_dsn=dsn,
                        clickhouse_database=db, batch_max_rows=args.batch_rows, batch_max_seconds=args.batch_seconds,
                        fetch_max_records=args.fetch_records, query_port=0,
                        sink_group_id=f"bench-{uuid.uuid4().hex[:6]}")


async def throughput(base: ServiceSettings, dsn: str, args: argparse.Namespace) -> dict[str, float]:
    settings = base.model_copy(update={"topic_prefix": f"b{uuid.uuid4().hex[:6]}."})
    await create_topics(settings)
    produced = await produce_backlog(settings, args.records)
    db = f"bench_{uuid.uuid4().hex[:6]}"
    store = Store(dsn, db)
    store.ensure_schema()
    sink = TimedSink(sink_settings(settings, dsn, db, args), store)
    task = asyncio.create_task(sink.run())
    cpu0 = time.process_time()
    while not await sink.caught_up():
        await asyncio.sleep(0.05)
    end = time.perf_counter()
    cpu = time.process_time() - cpu0  # every thread of this process: event loop, insert thread, chDB engine
    sink.stop()
    await task
    rows = sum(store.query(f"SELECT count() FROM {t} FINAL")[1][0][0] for t in FACTS)
    assert sink.first_record is not None
    insert_only = await insert_path(store, sink.settings.redactor(), args.batch_rows, args.insert_batches)
    store.client.command(f"DROP DATABASE {db}")
    store.close()
    return {"records": produced, "rows": rows, "seconds": end - sink.first_record,
            "rows_per_s": rows / (end - sink.first_record), "insert_only_rows_per_s": insert_only,
            "rows_per_cpu_s": rows / cpu}


async def freshness(base: ServiceSettings, dsn: str, args: argparse.Namespace) -> dict[str, float]:
    settings = base.model_copy(update={"topic_prefix": f"f{uuid.uuid4().hex[:6]}."})
    await create_topics(settings)
    db = f"fresh_{uuid.uuid4().hex[:6]}"
    store = Store(dsn, db)
    store.ensure_schema()
    reader = store.reader()
    sink = Sink(sink_settings(settings, dsn, db, args), store)
    task = asyncio.create_task(sink.run())
    while not sink.consumer.assignment():
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # group settled
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0, acks=1)
    await producer.start()
    produced_at: dict[int, float] = {}
    visible_at: dict[int, float] = {}
    total = int(args.rate * args.seconds)
    done = asyncio.Event()

    async def poll() -> None:
        seen = 0
        while seen < total:
            _, rows = await asyncio.to_thread(
                reader.query, "SELECT max(turn_seq) FROM events WHERE kind = 'end_of_turn' AND call_id = 'fresh'")
            now = time.perf_counter()
            top = int(rows[0][0] or 0)
            for i in range(seen + 1, top + 1):
                visible_at[i] = now
            seen = max(seen, top)
            await asyncio.sleep(0.02)
        done.set()

    poller = asyncio.create_task(poll())
    start = time.perf_counter()
    for i in range(1, total + 1):
        # one call, so one partition: records become visible in order and max(turn_seq) tells which
        rec = r.TurnEvent("fresh", i, r.TurnEventKind.END_OF_TURN, r.now_us(), r.now_us())
        produced_at[i] = time.perf_counter()
        await producer.send(topic_name(settings, topic_for(r.TurnEvent)), codec.encode(rec), key=b"fresh")
        delay = start + i / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.wait_for(done.wait(), 60)
    poller.cancel()
    await producer.stop()
    sink.stop()
    await task
    lags = sorted(visible_at[i] - produced_at[i] for i in produced_at)
    reader.close()
    store.client.command(f"DROP DATABASE {db}")
    store.close()
    return {"records": total, "p50_s": lags[len(lags) // 2], "p95_s": lags[int(len(lags) * 0.95)],
            "max_s": lags[-1]}


async def main_async(args: argparse.Namespace) -> None:
    broker = None
    bootstrap = os.environ.get("SWITCHBOARD_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    base = ServiceSettings(kafka_bootstrap=bootstrap)
    tune_gc()  # as `switchboard sink` does
    tmp = tempfile.mkdtemp(prefix="sink-bench-")
    dsn = f"chdb://{tmp}/clickhouse"
    anchor = Store(dsn, "default")
    try:
        print(f"batch settings: batch_max_rows={args.batch_rows} batch_max_seconds={args.batch_seconds} "
              f"fetch_max_records={args.fetch_records} "
              f"fetch_max_wait_ms={SinkSettings.model_fields['fetch_max_wait_ms'].default}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
              f"ClickHouse {dsn} (chDB, in-process); Kafka tansu {bootstrap}", flush=True)
        runs = []
        for i in range(args.repeat):
            res = await throughput(base, dsn, args)
            runs.append(res)
            print(f"  throughput run {i + 1}: {res['rows']:.0f} rows in {res['seconds']:.2f} s = "
                  f"{res['rows_per_s']:,.0f} rows/s end to end ({res['rows_per_cpu_s']:,.0f} rows per CPU-second of "
                  f"the sink process); write alone {res['insert_only_rows_per_s']:,.0f} rows/s", flush=True)
        fresh = []
        for i in range(args.repeat):
            res = await freshness(base, dsn, args)
            fresh.append(res)
            ms = {k: res[k] * 1000 for k in ("p50_s", "p95_s", "max_s")}
            print(f"  freshness run {i + 1}: {res['records']:.0f} records at {args.rate}/s: p50 {ms['p50_s']:.0f} ms, "
                  f"p95 {ms['p95_s']:.0f} ms, max {ms['max_s']:.0f} ms", flush=True)
        med = statistics.median
        print(f"median: sustained throughput {med(x['rows_per_s'] for x in runs):,.0f} rows/s end to end "
              f"(Kafka → ClickHouse, {med(x['rows'] for x in runs):.0f} rows; "
              f"{med(x['rows_per_cpu_s'] for x in runs):,.0f} rows/CPU-s); write alone "
              f"{med(x['insert_only_rows_per_s'] for x in runs):,.0f} rows/s; freshness p50 "
              f"{med(x['p50_s'] for x in fresh) * 1000:.0f} ms, p95 {med(x['p95_s'] for x in fresh) * 1000:.0f} ms "
              f"(load average now {os.getloadavg()[0]:.1f})")
    finally:
        anchor.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if broker:
            broker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=1_000_000,
                   help="backlog size for the throughput run; long enough (about 10 s to drain) that the cold "
                        "start and the last, partial batch weigh little")
    p.add_argument("--rate", type=float, default=2000.0, help="records/s of the freshness run")
    p.add_argument("--seconds", type=float, default=15.0, help="length of the freshness run")
    p.add_argument("--repeat", type=int, default=3, help="runs of each measurement (medians are reported)")
    defaults = SinkSettings.model_fields
    p.add_argument("--batch-rows", type=int, default=defaults["batch_max_rows"].default, help="sink batch_max_rows")
    p.add_argument("--batch-seconds", type=float, default=defaults["batch_max_seconds"].default,
                   help="sink batch_max_seconds")
    p.add_argument("--fetch-records", type=int, default=defaults["fetch_max_records"].default,
                   help="sink fetch_max_records")
    p.add_argument("--insert-batches", type=int, default=10, help="batches of the insert-path measurement")
    args = p.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
