"""The JSON API's text feed reads only the partitions its own calls' keys land on, on the real broker."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from ingress.jsonapi.textfeed import TextFeed
from switchboard.bus import Correlation, Publisher, make_producer
from switchboard.records import AgentReply, ReplyKind, Transcript, TranscriptKind, now_us
from switchboard.settings import ServiceSettings


def transcript(call_id: str, text: str) -> Transcript:
    return Transcript(call_id, 1, TranscriptKind.FINAL, text, "en-US", 1000, "test", now_us())


def reply(call_id: str, text: str) -> AgentReply:
    return AgentReply(call_id, 1, 0, ReplyKind.SENTENCE, text, 0, "test", now_us())


async def test_feed_delivers_its_calls_text_only_and_reads_only_their_partitions(bus_settings: ServiceSettings) -> None:
    producer = make_producer(bus_settings)
    await producer.start()
    publisher = Publisher(bus_settings, producer, "test")
    feed = TextFeed(bus_settings)
    got: list[object] = []
    try:
        await feed.subscribe("call-mine", got.append)
        landed = set()
        for record in (transcript("call-other", "not for me"), transcript("call-mine", "hello"),
                       reply("call-mine", "Hi there.")):
            meta = await (await publisher.send(record, Correlation()))
            if record.call_id == "call-mine":
                landed.add(TopicPartition(meta.topic, meta.partition))
        assert feed.assigned == landed, "the feed must read exactly the partitions of its calls' keys"
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted((type(r).__name__, r.text) for r in got) == [("AgentReply", "Hi there."), ("Transcript", "hello")]
        await feed.unsubscribe("call-mine")
        assert feed.assigned == set(), "an idle feed must read nothing"
    finally:
        await feed.stop()
        await producer.stop()
