"""Wiring of the cloud voice from settings: Azure Speech behind a breaker, Piper behind it, the phrase cache."""

from __future__ import annotations

import asyncio

from processors.resilience import EngineGuard, Journal
from processors.tts.fallback import ResilientTts
from processors.tts.phrase_cache import PhraseCache
from processors.tts.settings import TtsSettings


def cloud_tts(settings: TtsSettings) -> ResilientTts:
    from processors.tts.azure import AzureTts
    from processors.tts.piper import PiperEngine

    guard = EngineGuard("tts", settings.tts_engine, timeout_s=settings.tts_first_audio_s,
                        fail_max=settings.tts_breaker_failures, reset_s=settings.tts_breaker_reset_s)
    cloud = AzureTts(settings.azure_speech(), settings.azure_tts_voice)
    cache = PhraseCache([*settings.phrases, settings.fallback_phrase])
    engine = ResilientTts(cloud, PiperEngine(settings.piper_length_scale), guard, cache, Journal(),
                        first_audio_s=settings.tts_first_audio_s, next_audio_s=settings.tts_next_audio_s,
                        fallback_phrase=settings.fallback_phrase, default_voice=settings.azure_tts_voice)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # at start-up, before the service's loop: the fallback utterance is ready for the first call
        asyncio.run(engine.warm())
    return engine
