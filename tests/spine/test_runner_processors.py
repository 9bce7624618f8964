"""What the concurrent runner asks of the processors and their engines, without Kafka: no work for
calls that have ended, model calls on a bounded pool off the event loop, the turns processor's
lost-call sweep under concurrency, and fetch waits that back off while idle."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from processors.agent.logic import AgentProcessor
from processors.agent.policy import ClinicPolicy
from processors.agent.state import MemoryStore
from processors.tts.logic import Synthesizer
from processors.tts.piper import PiperEngine
from processors.turns import vad
from processors.turns.logic import TurnDetector
from processors.turns.settings import TurnsSettings
from switchboard import inference, metrics
from switchboard.audio import array_to_pcm16
from switchboard.bus import Correlation
from switchboard.ended import EndedCalls
from switchboard.fetchwait import FetchWait
from switchboard.records import (
    AgentReply,
    AudioFrame,
    AudioOut,
    CallEvent,
    CallEventKind,
    ReplyKind,
    Transcript,
    TranscriptKind,
)
from switchboard.runner import Incoming
from switchboard.topics import AUDIO_IN, CALLS, REPLIES, TRANSCRIPTS


def _event(call: str, kind: CallEventKind) -> CallEvent:
    return CallEvent(call, "MZ", kind, 1, "twilio", "clinic", "en-US", "node", 2)


async def _outs(proc, record, topic, call: str = "CA1", partition: int = 0, offset: int = 0) -> list:
    msg = Incoming(record, Correlation(call_id=call), topic, partition, offset, 0)
    return [o async for o in proc.handle(msg)]


def _skips(service: str, what: str) -> float:
    return metrics.ENDED_CALL_SKIPS.labels(service, what)._value.get()


def _sentence(call: str, text: str, turn: int = 0, seq: int = 0) -> AgentReply:
    return AgentReply(call, turn, seq, ReplyKind.SENTENCE, text, 2, "policy", 0)


# ----------------------------------------------------------------- ended calls


def test_ended_calls_are_remembered_for_a_while_and_bounded() -> None:
    now = [0.0]
    ended = EndedCalls(limit=2, ttl_s=60, clock=lambda: now[0])
    for call in ("A", "B", "C"):
        ended.end(call)
    assert "A" not in ended and "B" in ended and "C" in ended, "the oldest is forgotten past the limit"
    now[0] = 61
    assert "B" not in ended, "and every entry expires"


async def test_the_agent_does_not_greet_a_call_that_hung_up_before_its_turn_came() -> None:
    agent = AgentProcessor(ClinicPolicy(), MemoryStore())
    before = _skips("agent", "greeting")
    # the watcher sees the hang-up while call_started still waits in the call's lane
    await agent.on_watched(_event("CA1", CallEventKind.CALL_ENDED))
    assert await _outs(agent, _event("CA1", CallEventKind.CALL_STARTED), CALLS) == []
    assert _skips("agent", "greeting") == before + 1
    assert "CA1" not in agent.states


async def test_the_agent_does_not_answer_a_transcript_of_a_call_that_ended() -> None:
    agent = AgentProcessor(ClinicPolicy(), MemoryStore())
    await _outs(agent, _event("CA1", CallEventKind.CALL_STARTED), CALLS)
    before = _skips("agent", "reply")
    await agent.on_watched(_event("CA1", CallEventKind.CALL_ENDED))
    final = Transcript("CA1", 40, TranscriptKind.FINAL, "I'd like to book an appointment", "en-US", 900, "w", 2)
    assert await _outs(agent, final, TRANSCRIPTS) == []
    assert _skips("agent", "reply") == before + 1


@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    return PiperEngine()


async def test_tts_makes_no_audio_for_a_call_that_ended(piper) -> None:
    tts = Synthesizer(piper)
    before = _skips("tts", "sentence")
    assert await _outs(tts, _event("CA1", CallEventKind.CALL_ENDED), CALLS) == []
    assert await _outs(tts, _sentence("CA1", "Thank you for calling Riverside Clinic."), REPLIES) == []
    assert _skips("tts", "sentence") == before + 1
    spoken = await _outs(tts, _sentence("CA2", "How can I help you today?"), REPLIES, call="CA2")
    assert any(isinstance(o.record, AudioOut) for o in spoken), "other calls are unaffected"


async def test_a_hang_up_drops_the_calls_synthesis_still_queued_for_the_inference_pool(piper) -> None:
    inference.configure(1)  # one model call at a time: the second call's synthesis must queue
    try:
        tts = Synthesizer(piper)
        long = "I can book, reschedule or cancel an appointment, or tell you our opening hours. " * 3
        dropped = metrics.INFERENCE_DROPPED._value.get()
        busy = asyncio.create_task(_outs(tts, _sentence("CA1", long), REPLIES))
        while metrics.INFERENCE_BUSY._value.get() < 1:
            await asyncio.sleep(0.005)
        queued = asyncio.create_task(_outs(tts, _sentence("CA2", "Which day would suit you?"), REPLIES, call="CA2"))
        while metrics.INFERENCE_QUEUED._value.get() < 1:
            await asyncio.sleep(0.005)
        await tts.on_watched(_event("CA2", CallEventKind.CALL_ENDED))  # the caller hangs up meanwhile
        assert not [o for o in await queued if isinstance(o.record, AudioOut)], "never synthesised"
        assert metrics.INFERENCE_DROPPED._value.get() == dropped + 1
        assert [o for o in await busy if isinstance(o.record, AudioOut)], "the live call was served"
    finally:
        inference.configure(0)


# ------------------------------------------------------------ inference pool


async def test_model_calls_run_off_the_loop_at_most_pool_size_at_once() -> None:
    inference.configure(2)
    try:
        running, most = 0, 0
        lock = threading.Lock()

        def model(x: int) -> int:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.05)
            with lock:
                running -= 1
            return x * 2

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        tick = asyncio.create_task(ticker())
        results = await asyncio.gather(*(inference.run_inference(model, n) for n in range(6)))
        tick.cancel()
        assert results == [0, 2, 4, 6, 8, 10]
        assert most == 2, "bounded by the pool, not one thread per call"
        assert ticks > 10, "the event loop kept running while the models computed"
        with pytest.raises(ZeroDivisionError):
            await inference.run_inference(lambda: 1 / 0)
    finally:
        inference.configure(0)


def test_the_pool_defaults_to_one_thread_per_core() -> None:
    import os

    inference.configure(0)
    assert inference.threads() == os.cpu_count()


# -------------------------------------------------------------- turns sweep


def _frame(call: str, seq: int, ts_us: int) -> AudioFrame:
    return AudioFrame(call, seq, ts_us, 16000, array_to_pcm16(np.zeros(320, dtype=np.int16)), 3)


async def test_a_call_replayed_behind_other_partitions_is_not_ended_as_lost() -> None:
    settings = TurnsSettings()
    turns = TurnDetector(settings, vad.factory(settings))
    await _outs(turns, _event("OLD", CallEventKind.CALL_STARTED), CALLS, call="OLD", partition=1)
    # partition 1 is being replayed (frames from a minute ago) while partition 0 is live
    await _outs(turns, _frame("OLD", 0, 1_000_000), AUDIO_IN, call="OLD", partition=1)
    live = 61_000_000
    outs = await _outs(turns, _frame("LIVE", 0, live), AUDIO_IN, call="LIVE", partition=0)
    assert not [o for o in outs if isinstance(o.record, CallEvent)], "OLD's own partition is still behind"
    assert "OLD" in turns.calls


# --------------------------------------------------------------- fetch waits


def test_the_fetch_wait_stays_short_while_records_flow_and_backs_off_when_idle() -> None:
    now = [0.0]
    wait = FetchWait(short_ms=10, cap_ms=200, idle_after_ms=10_000, clock=lambda: now[0])
    assert wait.observe(True) == 10
    now[0] = 5.0
    assert wait.observe(False) == 10, "a quiet spell shorter than idle_after keeps it short"
    now[0] = 10.5
    assert [wait.observe(False) for _ in range(6)] == [20, 40, 80, 160, 200, 200]
    assert wait.observe(True) == 10, "the first record brings it back"


def test_a_busy_owner_keeps_the_fetch_wait_short() -> None:
    now = [100.0]
    calls = {"CA1"}
    wait = FetchWait(10, 200, 0, keep_short=lambda: bool(calls), clock=lambda: now[0])
    assert wait.observe(False) == 10
    calls.clear()
    assert wait.observe(False) == 20
