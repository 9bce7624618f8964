"""The phrase cache and the cloud voice's fallback, with stand-ins for the cloud voice (no network needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from processors.resilience import EngineGuard, Journal
from processors.tts.fallback import ResilientTts
from processors.tts.logic import Synthesizer
from processors.tts.phrase_cache import PhraseCache
from switchboard.audio import pcm16_to_array
from switchboard.bus import Correlation
from switchboard.records import AgentReply, AudioOut, CallEvent, EngineUsage, ReplyKind, Timings
from switchboard.runner import Incoming
from switchboard.topics import REPLIES
from tests.engines.calls import of
from tests.engines.tones import ToneEngine


class CloudVoice(ToneEngine):
    """Stand-in for a cloud voice: a tone per sentence, or the failure it is told to have."""

    name = "azure"

    def __init__(self) -> None:
        super().__init__()
        self.failure: str | None = None

    async def synthesize(self, text: str, voice: str | None) -> AsyncIterator[np.ndarray]:
        if self.failure == "refuse":
            raise ConnectionRefusedError("cloud unreachable")
        if self.failure == "hang":
            await asyncio.sleep(3600)
        async for audio in super().synthesize(text, voice):
            yield audio * 2


def reply(call_id: str, text: str, seq: int = 0, voice: str | None = None) -> Incoming:
    r = AgentReply(call_id, 1, seq, ReplyKind.SENTENCE, text, 4, "openai", 1, voice=voice, timings=Timings())
    return Incoming(r, Correlation(call_id=call_id), REPLIES, 0, seq, 0)


async def speak(tts: Synthesizer, msg: Incoming) -> list:
    return [o.record async for o in tts.handle(msg)]


@pytest.fixture
def voices() -> tuple[CloudVoice, ToneEngine, ResilientTts]:
    cloud, offline = CloudVoice(), ToneEngine()
    offline.name = "piper"
    guard = EngineGuard("tts", "azure", timeout_s=0.2, fail_max=2, reset_s=0.3)
    engine = ResilientTts(cloud, offline, guard, PhraseCache(), Journal(), first_audio_s=0.2,
                          default_voice="en-US-AvaNeural")
    return cloud, offline, engine


async def test_common_phrases_are_synthesised_once_per_voice_and_reused():
    engine = ToneEngine()
    cache = PhraseCache()
    for voice in ("a", "a", "b", "a"):
        [x async for x in cache.speak(engine, voice, "How can I help you today?")]
    for _ in range(2):
        [x async for x in cache.speak(engine, "a", "Your booking is on Tuesday.")]
    assert engine.spoken == [("How can I help you today?", "a"), ("How can I help you today?", "b"),
                             ("Your booking is on Tuesday.", "a"), ("Your booking is on Tuesday.", "a")]


async def test_a_cached_phrase_costs_nothing_and_a_fresh_sentence_is_priced(voices):
    cloud, _, engine = voices
    tts = Synthesizer(engine)
    first = await speak(tts, reply("c1", "Goodbye!"))
    again = await speak(tts, reply("c2", "Goodbye!"))
    assert [(u.engine, u.tts_characters, u.cost_usd) for u in of(first, EngineUsage)] == [
        ("azure", 8, pytest.approx(8 * 15e-6))]
    assert of(again, AudioOut) and not of(again, EngineUsage)
    assert [t for t, _ in cloud.spoken].count("Goodbye!") == 1


@pytest.mark.parametrize("failure", ["refuse", "hang"])
async def test_a_failing_cloud_voice_falls_back_within_its_deadline_for_the_rest_of_the_call(voices, failure):
    cloud, offline, engine = voices
    tts = Synthesizer(engine)
    cloud.failure = failure
    t0 = time.perf_counter()
    outs = await speak(tts, reply("c1", "Your appointment is on Tuesday."))
    assert time.perf_counter() - t0 < 0.2 + 0.4, "the first-audio deadline, not the hang"
    assert [t for t, _ in offline.spoken] == ["Sorry, give me a moment.", "Your appointment is on Tuesday."]
    audio = np.concatenate([pcm16_to_array(a.pcm) for a in of(outs, AudioOut)])
    assert len(audio) == 2 * 1600, "the cached fallback utterance, then the sentence in the offline voice"
    assert of(outs, CallEvent)[0].attributes["to"] == "piper"
    cloud.failure = None
    later = await speak(tts, reply("c1", "See you then.", seq=1))
    assert of(later, AudioOut) and "See you then." not in [t for t, _ in cloud.spoken]


async def test_the_breaker_sends_new_calls_to_the_offline_voice_until_a_trial_succeeds(voices):
    cloud, _offline, engine = voices
    tts = Synthesizer(engine)
    cloud.failure = "refuse"
    for call in ("a", "b"):
        await speak(tts, reply(call, "Hello."))
    assert engine.guard.state == "open"
    cloud.failure = None
    outs = await speak(tts, reply("c", "Welcome."))
    assert "Welcome." not in [t for t, _ in cloud.spoken] and "breaker open" in of(outs, CallEvent)[0].reason
    await asyncio.sleep(0.35)
    await speak(tts, reply("d", "Welcome back."))
    assert "Welcome back." in [t for t, _ in cloud.spoken] and engine.guard.state == "closed"


async def test_a_call_chooses_its_voice(voices):
    cloud, offline, engine = voices
    tts = Synthesizer(engine)
    await speak(tts, reply("c1", "One.", voice="azure:en-GB-SoniaNeural"))
    await speak(tts, reply("c2", "Two.", voice="piper:"))
    await speak(tts, reply("c3", "Three."))
    assert cloud.spoken == [("One.", "en-GB-SoniaNeural"), ("Three.", "en-US-AvaNeural")]
    assert ("Two.", None) in offline.spoken


def test_the_offline_voice_can_serve_common_phrases_from_a_cache_warmed_at_start(piper, monkeypatch):
    from processors.tts.main import create_engine
    from processors.tts.settings import TtsSettings

    monkeypatch.setattr("processors.tts.piper.PiperEngine", lambda *a, **k: piper)
    engine = create_engine(TtsSettings(tts_engine="piper", phrase_cache=True))
    assert engine.name == "piper" and engine.cache.get("piper", None, "Sorry, give me a moment.") is not None

    async def twice() -> list[np.ndarray]:
        return [a for _ in range(2) async for a in engine.synthesize("Goodbye!", None)]

    first, second = asyncio.run(twice())
    assert first is second, "synthesised once, then reused"
