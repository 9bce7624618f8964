"""The concurrent runner on the real broker: many calls in flight keep each call's order, every
record is handled once (without crashes), the in-flight limit pauses instead of buffering, a
failing record is dead-lettered alone, and a worker killed mid-load loses nothing.

The test processor turns each ``transcripts`` record into one ``replies`` record after a random
pause, like an engine whose decode time varies per turn."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from switchboard import codec
from switchboard.bus import (
    Correlation,
    PartitionCountError,
    Publisher,
    consumer_options,
    create_topics,
    partition_verdict,
    topic_name,
)
from switchboard.records import AgentReply, DeadLetter, ReplyKind, Transcript, TranscriptKind
from switchboard.runner import Incoming, Out, Runner
from switchboard.settings import ServiceSettings
from switchboard.topics import CALLS, CATALOG, DEADLETTER, REPLIES, TRANSCRIPTS, Topic
from tests.pipeline import metric

ROOT = Path(__file__).resolve().parents[2]


class Echo:
    """Replies to every transcript after a random pause; records how many ran at once."""

    name = "echo"
    inputs: tuple[Topic, ...] = (TRANSCRIPTS,)

    def __init__(
        self, max_pause_s: float = 0.02, seed: int = 1, fail_text: str = "", gate: asyncio.Event | None = None
    ) -> None:
        self.rng = random.Random(seed)
        self.max_pause_s = max_pause_s
        self.fail_text = fail_text
        self.gate = gate
        self.running = 0
        self.most = 0
        self.handled: list[tuple[str, int]] = []

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        return None

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        return None

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        t: Transcript = msg.record
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.rng.random() * self.max_pause_s)
            if t.text == self.fail_text:
                raise ValueError("this transcript breaks the processor")
            self.handled.append((t.call_id, t.turn_seq))
            yield Out(AgentReply(t.call_id, t.turn_seq, 0, ReplyKind.SENTENCE, t.text, 0, "echo", 1), msg.corr)
        finally:
            self.running -= 1


async def produce(settings: ServiceSettings, calls: int, per_call: int, texts: dict | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    try:
        publisher = Publisher(settings, producer, "test")
        for n in range(per_call):
            for c in range(calls):
                call = f"CA{c:03d}"
                text = (texts or {}).get((call, n), f"turn {n}")
                record = Transcript(call, n, TranscriptKind.FINAL, text, "en-US", 900, "test", 1)
                await publisher.send(record, Correlation(call_id=call))
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(settings: ServiceSettings, topic: Topic) -> list:
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    out: list = []
    try:
        tps = [TopicPartition(topic_name(settings, topic), p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                out += [(m.partition, m.offset, codec.decode(topic.record, m.value)) for m in msgs]
    finally:
        await consumer.stop()
    out.sort(key=lambda r: (r[0], r[1]))  # per partition in log order: per call in produce order
    return [r for _, _, r in out]


async def replies_per_call(settings: ServiceSettings) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    for r in await read_topic(settings, REPLIES):
        got.setdefault(r.call_id, []).append(r.turn_seq)
    return got


async def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def committed(settings: ServiceSettings, group: str, topic: Topic) -> dict[int, int]:
    consumer = AIOKafkaConsumer(group_id=group, **consumer_options(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic_name(settings, topic), p) for p in range(settings.partitions)]
        return {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def next_offsets(settings: ServiceSettings, topic: Topic) -> dict[int, int]:
    """One past the last offset of each partition, read from the log itself."""
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    out = {p: 0 for p in range(settings.partitions)}
    try:
        tps = [TopicPartition(topic_name(settings, topic), p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while batch := await consumer.getmany(timeout_ms=500):
            for tp, msgs in batch.items():
                out[tp.partition] = msgs[-1].offset + 1
    finally:
        await consumer.stop()
    return out


async def test_fifty_calls_in_flight_keep_each_calls_order_and_every_record_is_handled_once(bus_settings) -> None:
    calls, per_call = 50, 20
    echo = Echo(max_pause_s=0.02)
    runner = Runner(bus_settings, echo)
    task = asyncio.create_task(runner.run())
    try:
        await produce(bus_settings, calls, per_call)

        async def all_replies():
            got = await replies_per_call(bus_settings)
            return got if sum(map(len, got.values())) >= calls * per_call else None

        got = await wait_until(all_replies, 60, "a reply to every transcript")
        assert got == {f"CA{c:03d}": list(range(per_call)) for c in range(calls)}, "order per call, each once"
        assert sorted(echo.handled) == sorted((f"CA{c:03d}", n) for c in range(calls) for n in range(per_call))
        assert echo.most > 10, "records of different calls were handled at once"
        await wait_until(
            lambda: asyncio.sleep(0, runner.inflight.count == 0 and runner.inflight.commit_offsets() == {}),
            10,
            "everything committed",
        )
    finally:
        runner.stop()
        await task
    assert await committed(bus_settings, runner.group_id, TRANSCRIPTS) == await next_offsets(bus_settings, TRANSCRIPTS)


async def test_the_in_flight_limit_pauses_the_partitions_instead_of_buffering(bus_settings) -> None:
    settings = bus_settings.model_copy(update={"max_in_flight": 8})
    gate = asyncio.Event()
    echo = Echo(max_pause_s=0.0, gate=gate)
    runner = Runner(settings, echo)
    task = asyncio.create_task(runner.run())
    try:
        await produce(settings, calls=40, per_call=2)
        await wait_until(lambda: asyncio.sleep(0, runner.paused), 30, "the partitions to pause")
        await asyncio.sleep(0.5)  # paused: no more records are taken while the handlers are stuck
        assert runner.inflight.count == 8 and echo.most <= 8
        gate.set()

        async def all_replies():
            got = await replies_per_call(settings)
            return got if sum(map(len, got.values())) >= 80 else None

        got = await wait_until(all_replies, 60, "every reply after the handlers are released")
        assert got == {f"CA{c:03d}": [0, 1] for c in range(40)}
        # the last fetch may have filled the limit again just before its records were done: a paused runner looks
        # again every 0.1 s, so it resumes within a few of those once the count is below the low-water mark
        await wait_until(lambda: asyncio.sleep(0, not runner.paused), 5, "resumed below the low-water mark")
    finally:
        runner.stop()
        await task


async def test_a_failing_record_is_dead_lettered_alone_and_its_call_goes_on(bus_settings) -> None:
    echo = Echo(max_pause_s=0.005, fail_text="boom")
    runner = Runner(bus_settings, echo)
    task = asyncio.create_task(runner.run())
    try:
        await produce(bus_settings, calls=10, per_call=5, texts={("CA003", 2): "boom"})

        async def all_replies():
            got = await replies_per_call(bus_settings)
            return got if sum(map(len, got.values())) >= 49 else None

        got = await wait_until(all_replies, 60, "every other reply")
        assert got.pop("CA003") == [0, 1, 3, 4]
        assert all(turns == [0, 1, 2, 3, 4] for turns in got.values())
        dead = [r for r in await read_topic(bus_settings, DEADLETTER) if isinstance(r, DeadLetter)]
        assert len(dead) == 1 and "ValueError" in dead[0].error and dead[0].service == "echo"
    finally:
        runner.stop()
        await task


async def test_a_worker_killed_mid_load_loses_nothing_its_successor_replays(bus_settings, tmp_path) -> None:
    calls, per_call = 30, 20
    port = _free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_KAFKA_BOOTSTRAP": bus_settings.kafka_bootstrap,
        "SWITCHBOARD_TOPIC_PREFIX": bus_settings.topic_prefix,
        "SWITCHBOARD_METRICS_PORT": str(port),
    }
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115 - closed below
    worker = [sys.executable, "-m", "tests.spine.test_runner"]
    first = subprocess.Popen(worker, env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        await wait_until(lambda: _ready(url), 60, "the first worker to be assigned")
        await produce(bus_settings, calls, per_call)
        await wait_until(
            lambda: asyncio.sleep(0, metric(url, "switchboard_records_produced_total", service="echo", topic="replies")
                                  >= calls * per_call // 3),
            60,
            "a third of the work",
        )
        first.send_signal(signal.SIGKILL)  # no drain, no last commit
        first.wait(10)
        second = Runner(bus_settings, Echo(max_pause_s=0.002))
        task = asyncio.create_task(second.run())
        try:
            async def every_reply():
                got = await replies_per_call(bus_settings)
                ok = all(set(got.get(f"CA{c:03d}", ())) == set(range(per_call)) for c in range(calls))
                return got if ok else None

            got = await wait_until(every_reply, 90, "a reply to every transcript")
        finally:
            second.stop()
            await task
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    for call, turns in got.items():
        firsts = list(dict.fromkeys(turns))  # replays repeat a suffix; nothing is skipped or reordered
        assert firsts == list(range(per_call)), (call, turns)


async def _ready(url: str) -> bool:
    try:
        return metric(url, "switchboard_assigned_partitions", service="echo") > 0
    except OSError:
        return False


def _free_port() -> int:
    from switchboard.broker import free_port

    return free_port()


if __name__ == "__main__":  # the worker process of the kill test
    from switchboard.runner import serve

    serve(ServiceSettings(), Echo(max_pause_s=0.03))


# ------------------------------------------------------------ partition count


def test_partition_counts_that_disagree_are_refused_and_a_count_other_than_the_setting_is_reported() -> None:
    assert partition_verdict({"calls": 32, "turns": 32}, 32) is None
    warning = partition_verdict({"calls": 8, "turns": 8}, 32)
    assert warning is not None and "running with 8" in warning and "SWITCHBOARD_PARTITIONS=32" in warning
    with pytest.raises(PartitionCountError, match="calls=8, turns=16"):
        partition_verdict({"calls": 8, "turns": 16}, 32)


async def _admin_create(settings: ServiceSettings, counts: dict[Topic, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_name(settings, t), n, 1) for t, n in counts.items()])
    finally:
        await admin.close()


async def _partition_counts(settings: ServiceSettings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic_name(settings, t) for t in CATALOG])
        return {d["topic"].removeprefix(settings.topic_prefix): len(d["partitions"]) for d in described}
    finally:
        await admin.close()


async def test_topics_created_next_to_existing_ones_take_their_partition_count(broker, caplog) -> None:
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}.")
    await _admin_create(settings, {CALLS: 8})  # an older deployment made `calls` with 8
    with caplog.at_level(logging.WARNING, logger="switchboard.bus"):
        await create_topics(settings)
    assert set((await _partition_counts(settings)).values()) == {8}, "co-partitioned with what exists"
    assert any("running with 8" in str(getattr(r, "fields", {})) for r in caplog.records)


async def test_a_worker_refuses_to_start_on_topics_that_disagree(broker) -> None:
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}.")
    await _admin_create(settings, {TRANSCRIPTS: 4, CALLS: 8})

    class TwoInputs(Echo):
        inputs = (TRANSCRIPTS, CALLS)

    with pytest.raises(PartitionCountError):
        await asyncio.wait_for(Runner(settings, TwoInputs()).run(), 60)


# ------------------------------------------------------------ ended calls


async def test_on_the_broker_tts_makes_no_audio_for_a_caller_who_hung_up(bus_settings) -> None:
    from processors.tts.logic import Synthesizer
    from processors.tts.piper import PiperEngine
    from switchboard.records import AudioOut, CallEvent, CallEventKind
    from switchboard.topics import AUDIO_OUT

    tts = Synthesizer(PiperEngine())
    runner = Runner(bus_settings, tts)
    task = asyncio.create_task(runner.run())
    producer = AIOKafkaProducer(bootstrap_servers=bus_settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    try:
        publisher = Publisher(bus_settings, producer, "test")
        ended = CallEvent("CAgone", "MZ", CallEventKind.CALL_ENDED, 1, "twilio", "clinic", "en-US", "n", 1)
        await (await publisher.send(ended, Correlation(call_id="CAgone")))
        await wait_until(lambda: asyncio.sleep(0, "CAgone" in tts.ended), 60, "the hang-up to reach tts")
        for call in ("CAgone", "CAhere"):
            greeting = AgentReply(call, 0, 0, ReplyKind.SENTENCE, "How can I help you today?", 1, "policy", 1)
            await (await publisher.send(greeting, Correlation(call_id=call)))

        async def audio_for_the_live_call():
            records = [r for r in await read_topic(bus_settings, AUDIO_OUT) if isinstance(r, AudioOut)]
            return records if any(r.call_id == "CAhere" for r in records) else None

        records = await wait_until(audio_for_the_live_call, 60, "the live call's greeting")
        await wait_until(lambda: asyncio.sleep(0, runner.inflight.count == 0), 30, "nothing left in flight")
        assert not [r for r in await read_topic(bus_settings, AUDIO_OUT) if r.call_id == "CAgone"]
        assert records and all(r.call_id == "CAhere" for r in records)
    finally:
        await producer.stop()
        runner.stop()
        await task
