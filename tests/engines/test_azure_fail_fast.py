"""The Azure Speech engines against an unreachable endpoint: they fail fast into the fallback path.

The endpoint is a loopback port with nothing listening (the real Speech SDK
tries to connect and is refused); the fallback engines are the real offline ones.
"""

from __future__ import annotations

import time

import numpy as np
from aiobreaker import CircuitBreakerListener

from processors.stt.logic import Transcriber
from processors.stt.main import create_engine as create_stt
from processors.stt.settings import SttSettings
from processors.tts.logic import Synthesizer
from processors.tts.main import create_engine as create_tts
from processors.tts.settings import TtsSettings
from switchboard.audio import array_to_pcm16, pcm16_to_array, read_wav
from switchboard.bus import Correlation
from switchboard.records import (
    AgentReply,
    AudioOut,
    CallEvent,
    EngineUsage,
    ReplyKind,
    SpeechChunk,
    Timings,
    Transcript,
    TranscriptKind,
)
from switchboard.runner import Incoming
from switchboard.topics import REPLIES, SPEECH
from switchboard.wer import wer
from tests.conftest import SHARED_AUDIO
from tests.engines.calls import of

KEY = "not-a-real-key"


def reply(text: str, seq: int = 0, voice: str | None = None) -> Incoming:
    r = AgentReply("c1", 1, seq, ReplyKind.SENTENCE, text, 4, "openai", 1, voice=voice, timings=Timings())
    return Incoming(r, Correlation(call_id="c1"), REPLIES, 0, seq, 0)


async def test_azure_tts_unreachable_plays_the_cached_fallback_then_the_offline_voice(unreachable_speech_endpoint,
                                                                                        piper, monkeypatch):
    settings = TtsSettings(tts_engine="azure", azure_speech_key=KEY, azure_speech_endpoint=unreachable_speech_endpoint,
                           tts_breaker_failures=1, tts_breaker_reset_s=60)
    monkeypatch.setattr("processors.tts.piper.PiperEngine", lambda *a: piper)  # reuse the loaded voice
    engine = create_tts(settings)
    assert (engine.name, engine.primary.name, engine.offline.name) == ("azure", "azure", "piper")
    tts = Synthesizer(engine)
    fallback = await _warm(engine)
    t0 = time.perf_counter()
    outs, first_audio_s = [], None
    async for o in tts.handle(reply("Your appointment is on Tuesday.")):
        if isinstance(o.record, AudioOut) and first_audio_s is None:
            first_audio_s = time.perf_counter() - t0
        outs.append(o.record)
    audio = [pcm16_to_array(a.pcm) for a in of(outs, AudioOut)]
    assert first_audio_s is not None and first_audio_s < settings.tts_first_audio_s, (
        f"the caller heard the fallback {first_audio_s:.2f} s after the sentence arrived")
    head = np.concatenate(audio)[: len(fallback)]
    assert (head == fallback).all(), "the caller first hears the pre-synthesised fallback utterance"
    event = of(outs, CallEvent)[0]
    assert event.attributes == {"stage": "tts", "from": "azure", "to": "piper"} and "AzureTtsError" in event.reason
    assert [(u.engine, u.tts_characters) for u in of(outs, EngineUsage)] == [("piper", 31)]
    # the rest of the call stays on the offline voice, without trying the cloud again
    nxt = [o.record async for o in tts.handle(reply("See you then.", seq=1))]
    assert of(nxt, AudioOut) and not of(nxt, CallEvent)
    assert [u.engine for u in of(nxt, EngineUsage)] == ["piper"]


class FailureClock(CircuitBreakerListener):
    def __init__(self, times: list[float]) -> None:
        self.times = times

    def failure(self, breaker, exception) -> None:
        self.times.append(time.perf_counter())


async def _warm(engine):
    await engine.warm()
    cached = engine.cache.get("piper", None, "Sorry, give me a moment.")
    assert cached is not None and len(cached) > 8000
    return cached


async def test_azure_stt_unreachable_replays_the_turn_into_moonshine(unreachable_speech_endpoint, moonshine,
                                                                     monkeypatch):
    settings = SttSettings(stt_engine="azure", azure_speech_key=KEY, azure_speech_endpoint=unreachable_speech_endpoint,
                           stt_final_s=0.5)
    monkeypatch.setattr("processors.stt.moonshine.MoonshineEngine", lambda *a: moonshine)
    engine = create_stt(settings)
    assert (engine.name, engine.primary.name, engine.offline.name) == ("azure", "azure", "moonshine")
    samples, rate = read_wav(SHARED_AUDIO / "librivox-0870.wav")
    samples = samples[: rate * 4]
    stt = Transcriber(engine)
    size = rate // 50
    chunks = [SpeechChunk("c1", 1, i // size, 0, rate, array_to_pcm16(samples[i : i + size]), False, "en-US")
              for i in range(0, len(samples), size)]
    chunks.append(SpeechChunk("c1", 1, len(chunks), 0, rate, b"", True, "en-US", Timings(turn_detected_us=1)))
    outs = []
    for i, c in enumerate(chunks[:-1]):
        outs += [o.record async for o in stt.handle(Incoming(c, Correlation(call_id="c1"), SPEECH, 0, i, 0))]
    failed_at: list[float] = []
    engine.guard.breaker.add_listener(FailureClock(failed_at))
    t0 = time.perf_counter()
    outs += [o.record async for o in stt.handle(Incoming(chunks[-1], Correlation(call_id="c1"), SPEECH, 0, 999, 0))]
    final = next(t for t in of(outs, Transcript) if t.kind is TranscriptKind.FINAL)
    reference = (SHARED_AUDIO / "librivox-0870.txt").read_text().split()[:9]
    assert wer(" ".join(reference), final.text) < 0.35, final.text
    assert len(failed_at) == 1 and failed_at[0] - t0 < settings.stt_final_s + 0.3, "gave up on the cloud in time"
