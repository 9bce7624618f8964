"""The agent service as deployed (its own process, on the real broker), switched to the LLM by environment alone.

The LLM is the local OpenAI-compatible server of these tests; the service
reaches it over real HTTP like it would reach OpenAI.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from switchboard import codec
from switchboard.broker import listen_port
from switchboard.bus import Correlation, Publisher, consumer_options, make_producer, topic_name
from switchboard.records import (
    AgentReply,
    CallEvent,
    CallEventKind,
    EngineUsage,
    ReplyKind,
    Timings,
    Transcript,
    TranscriptKind,
    TurnEvent,
    TurnEventKind,
)
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack
from switchboard.topics import CALLS, REPLIES, USAGE, Topic
from tests.engines.openai_server import Fail, Say

pytestmark = pytest.mark.slow


async def collect(settings: ServiceSettings, topic: Topic, done: Callable[[list[Any]], bool],
                  timeout_s: float = 30.0) -> list[Any]:
    """Records of ``topic`` from the beginning, until ``done(records)``."""
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic_name(settings, topic), p) for p in range(topic.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while not done(records):
            assert time.monotonic() < deadline, f"{topic.name}: only {records}"
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                records += [codec.decode(topic.record, m.value) for m in msgs]
    finally:
        await consumer.stop()
    return records


@asynccontextmanager
async def agent_service(broker, llm, tmp_path) -> AsyncIterator[tuple[ServiceSettings, Publisher]]:
    """The agent as its own process on the broker, pointed at the local LLM by environment alone."""
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"e{uuid.uuid4().hex[:8]}.")
    env = {"SWITCHBOARD_AGENT_ENGINE": "openai", "SWITCHBOARD_LLM_BASE_URL": llm.url,
           "SWITCHBOARD_LLM_API_KEY": "sk-test", "SWITCHBOARD_LLM_RETRIES": "0"}
    stack = Stack(settings, ingress_port=listen_port(), run_dir=tmp_path, only=("agent",), extra_env=env)
    stack._next_metrics_port = listen_port()
    await asyncio.to_thread(stack.start, False)
    producer = make_producer(settings)
    try:
        await asyncio.to_thread(stack.wait_ready, 120)
        await producer.start()
        yield settings, Publisher(settings, producer, "test")
    finally:
        await producer.stop()
        await asyncio.to_thread(stack.stop)


def ended(turn: int) -> Callable[[list[AgentReply]], bool]:
    return lambda rs: any(r.turn_seq == turn and r.kind is ReplyKind.END for r in rs)


async def test_the_agent_service_runs_the_llm_its_environment_names_and_publishes_usage_and_fallbacks(
        broker, llm, tmp_path):
    async with agent_service(broker, llm, tmp_path) as (settings, pub):
        corr = Correlation.new_call("c1", "s-c1", "clinic")
        llm.then(Say(["Sure. ", "Tuesday works."], usage=(120, 9)), Fail(500))
        await (await pub.send(CallEvent("c1", "s-c1", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US",
                                        "node-a", 2), corr))

        def final(turn: int, text: str) -> Transcript:
            return Transcript("c1", turn, TranscriptKind.FINAL, text, "en-US", 900, "whisper", 2,
                              timings=Timings(turn_detected_us=2))

        await collect(settings, REPLIES, ended(0))  # the greeting: the call is known (topics are not ordered)
        await (await pub.send(final(1, "Can I come on Tuesday?"), corr))
        await collect(settings, REPLIES, ended(1))
        await (await pub.send(final(2, "I'd like to book Tuesday at 10 AM."), corr))
        replies = await collect(settings, REPLIES, ended(2))
        said = {t: [r.text for r in replies if r.turn_seq == t and r.kind is ReplyKind.SENTENCE] for t in (1, 2)}
        assert said[1] == ["Sure.", "Tuesday works."]
        assert said[2] == ["Sorry, give me a moment.", "Just to confirm, I'll book you in for Tuesday at 10 AM.",
                           "Is that right?"]
        usage = await collect(settings, USAGE, lambda rs: len(rs) >= 2)
        assert (usage[0].engine, usage[0].llm_tokens_in, usage[0].llm_tokens_out) == ("openai", 120, 9)
        assert usage[0].cost_usd > 0 and all(isinstance(u, EngineUsage) for u in usage)
        events = await collect(settings, CALLS, lambda rs: any(e.kind is CallEventKind.ENGINE_FALLBACK for e in rs))
        fallback = next(e for e in events if e.kind is CallEventKind.ENGINE_FALLBACK)
        assert fallback.attributes == {"stage": "agent", "from": "openai", "to": "policy"} and fallback.turn_seq == 2


async def test_a_barge_in_cuts_a_streaming_llm_reply_short_in_the_running_service(broker, llm, tmp_path):
    async with agent_service(broker, llm, tmp_path) as (settings, pub):
        corr = Correlation.new_call("c2", "s-c2", "clinic")
        # ten sentences, 0.4 s apart: four seconds of streaming unless something stops it
        llm.then(Say([f"Sentence number {i}. " for i in range(10)], delay=0.4))
        await (await pub.send(CallEvent("c2", "s-c2", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US",
                                        "node-a", 2), corr))
        await collect(settings, REPLIES, ended(0))
        await (await pub.send(Transcript("c2", 7, TranscriptKind.FINAL, "Tell me everything", "en-US", 900,
                                         "whisper", 2, timings=Timings(turn_detected_us=2)), corr))
        await collect(settings, REPLIES, lambda rs: any(r.turn_seq == 7 for r in rs))  # it is streaming
        barge_in = TurnEvent("c2", 60, TurnEventKind.BARGE_IN, 3, 2, cancelled_turn_seq=7)
        t0 = time.monotonic()
        await (await pub.send(barge_in, corr))
        await collect(settings, REPLIES, lambda rs: any(r.turn_seq == 7 and r.kind is ReplyKind.CANCEL for r in rs))
        assert time.monotonic() - t0 < 2.0
        await asyncio.sleep(2.0)  # the rest of the stream would have come by now
        replies = await collect(settings, REPLIES, ended(0))
        sentences = [r.text for r in replies if r.turn_seq == 7 and r.kind is ReplyKind.SENTENCE]
        assert 1 <= len(sentences) < 5, sentences  # cut short, not played to the end
        assert not any(r.turn_seq == 7 and r.kind is ReplyKind.END for r in replies)
        assert llm.requests[-1].disconnected, "the HTTP stream to the LLM was left open"
