"""The pieces of `switchboard/recovery.py` on a real tansu that is restarted under them (each test its own broker)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from switchboard.broker import EmbeddedBroker
from switchboard.bus import consumer_options, create_topics, topic_name
from switchboard.recovery import BrokerCheck, MemberFile
from switchboard.settings import ServiceSettings
from switchboard.topics import AUDIO_OUT, CATALOG


@pytest.fixture
def own_broker(tmp_path):
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    yield b
    b.stop()


async def _topics(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = await admin.list_topics()
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)} if names else {}
    finally:
        await admin.close()


async def test_our_clients_never_auto_create_a_topic(own_broker):
    # tansu auto-creates a topic someone asks metadata for, with 4 partitions: after a restart that lost the
    # topics, the first client to ask would break co-partitioning for good
    consumer = AIOKafkaConsumer(bootstrap_servers=own_broker.bootstrap)
    await consumer.start()
    try:
        await consumer._client._metadata_update(consumer._client.cluster, ["nobody.made.me"])
        assert "nobody.made.me" not in await _topics(own_broker.bootstrap)
    finally:
        await consumer.stop()


async def test_after_a_broker_restart_topics_come_back_and_a_lost_log_is_read_from_its_start(own_broker):
    settings = ServiceSettings(kafka_bootstrap=own_broker.bootstrap, topic_prefix=f"r{uuid.uuid4().hex[:6]}.",
                               partitions=8)
    await create_topics(settings)
    name = topic_name(settings, AUDIO_OUT)
    tp = TopicPartition(name, 3)
    producer = AIOKafkaProducer(bootstrap_servers=own_broker.bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))  # as the egress reads its partitions
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        for i in range(5):
            await (await producer.send(name, b"before %d" % i, partition=3))
        got: list[bytes] = []
        while len(got) < 5:
            got += [m.value for m in (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])]
        assert await consumer.position(tp) == 5

        own_broker.restart()  # memory storage: every topic, record and offset is gone
        check = BrokerCheck(settings, consumer, [name], "test")
        deadline = time.monotonic() + 30
        while topic_name(settings, CATALOG[0]) not in await _topics(own_broker.bootstrap):
            await check.check(full=True)
            assert time.monotonic() < deadline, "the topics were not re-created"
            await asyncio.sleep(0.2)
        topics = await _topics(own_broker.bootstrap)
        assert {topics[topic_name(settings, t)] for t in CATALOG} == {8}  # every one, with its partition count

        await (await producer.send(name, b"after", partition=3))  # offset 0 of the new log
        after: list[bytes] = []
        while not after:  # without the check the consumer would wait at offset 5 for ever
            assert time.monotonic() < deadline, "the new log was never read"
            after += [m.value for m in (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])]
            await check.check()
        assert after == [b"after"]
    finally:
        await producer.stop()
        await consumer.stop()


def test_a_worker_keeps_its_member_id_only_under_a_stable_name(tmp_path):
    named = ServiceSettings(group_instance_id="stt-1", member_dir=str(tmp_path))
    MemberFile(named, "switchboard-stt").save("member-42")
    assert MemberFile(named, "switchboard-stt").load() == "member-42"  # what its replacement reads
    assert MemberFile(named.model_copy(update={"group_instance_id": "stt-0"}), "switchboard-stt").load() is None
    anonymous = MemberFile(ServiceSettings(member_dir=str(tmp_path)), "switchboard-stt")
    anonymous.save("member-7")
    assert anonymous.load() is None  # no name, no successor to hand it to
    static = named.model_copy(update={"static_membership": True})
    assert MemberFile(static, "switchboard-stt").load() is None  # the broker keeps static members itself
