"""Scaling by partition on the real broker: workers join, die and come back mid-call."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from switchboard import codec
from switchboard.audio import array_to_pcm16, read_wav
from switchboard.bus import Correlation, Publisher, consumer_options, topic_name
from switchboard.records import (
    AgentReply,
    CallEvent,
    CallEventKind,
    ReplyKind,
    SpeechChunk,
    Timings,
    Transcript,
    TranscriptKind,
)
from switchboard.services import BY_NAME
from switchboard.settings import ServiceSettings
from switchboard.topics import REPLIES, TRANSCRIPTS
from tests.conftest import SHARED_AUDIO
from tests.pipeline import metric, running_stack

pytestmark = pytest.mark.slow


async def _read_all(settings: ServiceSettings, topic, cls) -> list:
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    out = []
    try:
        tps = [TopicPartition(topic_name(settings, topic), p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                out += [codec.decode(cls, m.value) for m in msgs]
    finally:
        await consumer.stop()
    return out


async def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = await predicate()
        except OSError:  # a worker that is still starting does not serve /metrics yet
            result = None
        if result:
            return result
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_second_stt_worker_takes_partitions_mid_run_and_no_turn_is_lost(broker, tmp_path):
    samples, _ = read_wav(SHARED_AUDIO / "librivox-0880.wav")
    frames = [array_to_pcm16(samples[i : i + 320]) for i in range(0, len(samples), 320)]
    calls = [f"CAscale{i:02d}" for i in range(16)]
    with running_stack(broker, tmp_path, only=("stt",)) as stack:
        settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
        first = stack.workers[0]
        first_url = f"http://127.0.0.1:{first.metrics_port}/metrics"
        assert metric(first_url, "switchboard_assigned_partitions", service="stt") == settings.partitions
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=0)
        await producer.start()
        publisher = Publisher(settings, producer, "test")
        second = None
        try:
            # every call's turn is open while the second worker joins
            for seq, pcm in enumerate(frames):
                for call in calls:
                    await publisher.send(
                        SpeechChunk(call, 5, seq, 0, 16000, pcm, False, "en-US"), Correlation(call_id=call)
                    )
                if seq == 20:
                    second = stack.spawn(BY_NAME["stt"])
                if seq >= 20:
                    await asyncio.sleep(0.04)
            second_url = f"http://127.0.0.1:{second.metrics_port}/metrics"
            await _wait_for(
                lambda: asyncio.sleep(0, metric(second_url, "switchboard_assigned_partitions", service="stt") > 0),
                60,
                "the second worker to join",
            )
            for call in calls:
                final = SpeechChunk(call, 5, len(frames), 0, 16000, b"", True, "en-US", Timings(turn_detected_us=1))
                await publisher.send(final, Correlation(call_id=call))
            await producer.flush()
        finally:
            await producer.stop()

        async def finals():
            got = [t for t in await _read_all(settings, TRANSCRIPTS, Transcript) if t.kind is TranscriptKind.FINAL]
            return got if {t.call_id for t in got} == set(calls) else None

        transcripts = await _wait_for(finals, 90, "a final transcript for every call")
        assert metric(first_url, "switchboard_assigned_partitions", service="stt") < settings.partitions
        assert metric(second_url, "switchboard_assigned_partitions", service="stt") > 0
        for t in transcripts:  # the whole turn was recognised, not just what arrived after the move
            assert t.audio_ms == pytest.approx(len(samples) / 16, abs=40), t
            assert "young man" in t.text.lower(), t.text


async def test_the_agent_resumes_a_conversation_after_its_worker_is_killed_mid_call(broker, tmp_path):
    with running_stack(broker, tmp_path, only=("agent",)) as stack:
        settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=0)
        await producer.start()
        publisher = Publisher(settings, producer, "test")
        call = "CArestart"
        corr = Correlation(call_id=call)

        async def say(turn: int, text: str) -> None:
            await (
                await publisher.send(Transcript(call, turn, TranscriptKind.FINAL, text, "en-US", 900, "test", 1), corr)
            )

        async def reply_to(turn: int) -> str | None:
            """The whole reply, once its end record is there."""
            records = [
                r for r in await _read_all(settings, REPLIES, AgentReply) if r.call_id == call and r.turn_seq == turn
            ]
            if not any(r.kind is ReplyKind.END for r in records):
                return None
            return " ".join(r.text for r in records if r.kind is ReplyKind.SENTENCE)

        try:
            started = CallEvent(call, "MZ", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US", "n", 2)
            await (await publisher.send(started, corr))
            assert "How can I help" in await _wait_for(lambda: reply_to(0), 30, "the greeting")
            await say(100, "I'd like to book an appointment")
            assert "Which day" in await _wait_for(lambda: reply_to(100), 30, "the first answer")

            stack.stop_worker(stack.workers[0], kill=True)
            stack.spawn(BY_NAME["agent"])
            stack.wait_ready()

            await say(200, "Thursday please")
            assert "What time on Thursday" in await _wait_for(lambda: reply_to(200), 60, "the answer after restart")
            await say(300, "At 2 pm")
            assert "Thursday at 2 PM" in await _wait_for(lambda: reply_to(300), 30, "the confirmation")
        finally:
            await producer.stop()
