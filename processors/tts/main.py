"""Run the TTS processor: ``switchboard tts``."""

from __future__ import annotations

import argparse
import asyncio

from processors.tts.engine import TextToSpeech
from processors.tts.hold import Hold
from processors.tts.logic import Synthesizer
from processors.tts.settings import TtsSettings
from switchboard import logs, tracing
from switchboard.runner import serve
from switchboard.settings import load_settings


def create_engine(settings: TtsSettings) -> TextToSpeech:
    if settings.tts_engine == "piper":
        from processors.tts.first_clause import FirstClauseTts
        from processors.tts.piper import FIXED_GAIN, PiperEngine

        # cut sentences: one fixed gain for every text, so a first clause and its rest match in level
        first_clause = settings.tts_first_clause
        piper = PiperEngine(settings.piper_length_scale, gain=FIXED_GAIN if first_clause else None)
        if not settings.phrase_cache:
            return FirstClauseTts(piper) if first_clause else piper
        from processors.tts.phrase_cache import CachedTts, PhraseCache

        openers = settings.tts_clause_phrases if first_clause else []
        cached = CachedTts(piper, PhraseCache([*settings.phrases, settings.fallback_phrase, *openers]))
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # at start-up, before the service's loop: warm now, so the first call finds them
            asyncio.run(cached.warm())
        return FirstClauseTts(cached) if first_clause else cached
    if settings.tts_engine == "azure":
        from processors.tts.cloud import cloud_tts

        return cloud_tts(settings)
    raise ValueError(f"unknown TTS engine {settings.tts_engine!r} (choose: piper, azure)")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="switchboard tts", description="Text-to-speech: reply sentences in, agent audio out."
    ).parse_args(argv)
    settings = load_settings(TtsSettings, "switchboard tts")
    logs.setup("tts", settings.log_level)
    tracing.setup("tts", settings)  # OpenTelemetry spans of each turn, when an OTLP endpoint is set
    hold = Hold(settings.tts_hold_s, settings.tts_hold_max_audio_s)  # speculative audio until confirmed
    serve(settings, Synthesizer(create_engine(settings), settings.chunk_ms, hold=hold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
