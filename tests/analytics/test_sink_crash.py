"""Kill the sink process (SIGKILL) in the middle of a stream and restart it: afterwards every record
is in ClickHouse exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from switchboard import records as r
from switchboard.broker import free_port
from switchboard.bus import Correlation, Publisher, consumer_options, make_producer, topic_name
from switchboard.settings import ServiceSettings
from switchboard.topics import CALLS as CALLS_TOPIC
from switchboard.topics import TURNS as TURNS_TOPIC
from switchboard.topics import Topic

ROOT = Path(__file__).resolve().parents[2]
CALLS, TURNS_PER_CALL = 600, 8


def stream(call: int, now: int) -> list[Any]:
    cid = f"crash-{call}"
    out: list[Any] = [r.CallEvent(cid, "s", r.CallEventKind.CALL_STARTED, now, "twilio", "a", "en", "n", 0)]
    for t in range(1, TURNS_PER_CALL + 1):
        ts = now + t * 1000
        out.append(r.TurnEvent(cid, t, r.TurnEventKind.END_OF_TURN, ts, ts - 900, ts - 100))
        out.append(r.TurnLatency(cid, t, ts + 500, r.Timings(speech_end_us=ts - 100, turn_detected_us=ts),
                                 response_ms=600.0, processing_ms=500.0))
    out.append(r.CallEvent(cid, "s", r.CallEventKind.CALL_ENDED, now + 99_000, "twilio", "a", "en", "n", 0,
                           reason="hangup"))
    return out


EXPECTED = {"events": CALLS * (2 + TURNS_PER_CALL), "turns": CALLS * TURNS_PER_CALL, "calls": CALLS}


TOKEN = "crash-test-token-0123456789"


def report(url: str, name: str) -> list[list[Any]]:
    """A named query through the sink's report endpoint (it runs no other SQL)."""
    req = urllib.request.Request(f"{url}/reports/{name}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["data"]


def read_stopped(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    """SQL on the chDB path once the sink has stopped, from a process of its own (chDB: one path per process)."""
    code = ("import json, sys; from sinks.store import Store; s = Store(sys.argv[1], 'switchboard'); "
            "print(json.dumps([list(r) for r in s.query(sys.argv[2])[1]], default=str))")
    out = subprocess.run([sys.executable, "-c", code, dsn, sql], cwd=ROOT, capture_output=True, timeout=60, check=True)
    return [tuple(r) for r in json.loads(out.stdout.decode().strip().splitlines()[-1])]


async def committed(settings: ServiceSettings, group: str, topics: tuple[Topic, ...]) -> int:
    """Sum of a group's committed offsets over the topics' partitions."""
    consumer = AIOKafkaConsumer(group_id=group, **consumer_options(settings))
    await consumer.start()
    try:
        total = 0
        for t in topics:
            for p in range(t.partitions):
                total += await consumer.committed(TopicPartition(topic_name(settings, t), p)) or 0
        return total
    finally:
        await consumer.stop()


def wait_for(predicate: Any, timeout_s: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass
        assert proc is None or proc.poll() is None, f"sink exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.timeout(180)
async def test_sink_killed_mid_stream_and_restarted_leaves_every_record_exactly_once(
    bus_settings: ServiceSettings, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SWITCHBOARD_KAFKA_BOOTSTRAP": bus_settings.kafka_bootstrap,
        "SWITCHBOARD_TOPIC_PREFIX": bus_settings.topic_prefix,
        "SWITCHBOARD_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'clickhouse'}",
        "SWITCHBOARD_QUERY_PORT": str(port),
        "SWITCHBOARD_QUERY_TOKEN": TOKEN,
        "SWITCHBOARD_BATCH_MAX_ROWS": "2000",
        "SWITCHBOARD_BATCH_MAX_SECONDS": "0.2",
        "SWITCHBOARD_FETCH_MAX_RECORDS": "1000",
        # rows written, offsets not yet committed for 1 s after each insert: the kill lands in that window
        "SWITCHBOARD_COMMIT_DELAY_S": "1.0",
        "SWITCHBOARD_SINK_GROUP_ID": "crash-sink",
    }
    log = open(tmp_path / "sink.log", "ab")  # noqa: SIM115 - closed at the end

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "sinks.main"], env=env, cwd=ROOT, stdout=log, stderr=log)

    def count(table: str, final: bool = True) -> int:
        stored, deduplicated = next((r[1], r[2]) for r in report(url, "table_rows") if r[0] == table)
        return int(deduplicated if final else stored)

    producer = make_producer(bus_settings)
    await producer.start()
    pub = Publisher(bus_settings, producer, "test")
    first = start()
    try:
        await asyncio.to_thread(wait_for, lambda: report(url, "table_rows"), 30, "the sink's report endpoint", first)

        async def produce() -> None:
            now = r.now_us()
            for call in range(CALLS):
                futs = [await pub.send(rec, Correlation(call_id=rec.call_id)) for rec in stream(call, now)]
                if call % 20 == 19:
                    await asyncio.gather(*futs)
                    await asyncio.sleep(0.3)  # a steady stream over ~9 s, not one burst
            await producer.flush()

        producing = asyncio.create_task(produce())
        await asyncio.to_thread(wait_for, lambda: count("events", final=False) > 0, 30, "a first insert", first)
        written = count("events", final=False)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert not producing.done(), "the kill should land mid-stream"
        # The kill left rows in ClickHouse whose offsets were never committed: they will be redelivered.
        assert await committed(bus_settings, "crash-sink", (CALLS_TOPIC, TURNS_TOPIC)) < written
        second = start()
        try:
            await producing

            def complete() -> bool:
                return all(count(t) >= n for t, n in EXPECTED.items())

            await asyncio.to_thread(wait_for, complete, 90, "every record", second)
            time.sleep(1.0)  # a late duplicate would show up now
            assert {t: count(t) for t in EXPECTED} == EXPECTED
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        dsn = env["SWITCHBOARD_CLICKHOUSE_DSN"]
        uniq = read_stopped(dsn, "SELECT uniqExact(kafka_partition, kafka_offset, source) FROM events FINAL")
        assert int(uniq[0][0]) == EXPECTED["events"]
        ended = read_stopped(dsn, "SELECT countIf(ended_at IS NOT NULL), countIf(turns = 8) FROM calls FINAL")
        assert [int(v) for v in ended[0]] == [CALLS, CALLS]
    finally:
        if first.poll() is None:
            first.kill()
        await producer.stop()
        log.close()
