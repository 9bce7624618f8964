"""Run the TTS processor: ``switchboard tts``."""

from __future__ import annotations

import argparse
import asyncio

from processors.tts.engine import TextToSpeech
from processors.tts.logic import Synthesizer
from processors.tts.settings import TtsSettings
from switchboard import logs
from switchboard.runner import serve


def create_engine(settings: TtsSettings) -> TextToSpeech:
    if settings.tts_engine == "piper":
        from processors.tts.piper import PiperEngine

        piper = PiperEngine(settings.piper_length_scale)
        if not settings.phrase_cache:
            return piper
        from processors.tts.phrase_cache import CachedTts, PhraseCache

        cached = CachedTts(piper, PhraseCache([*settings.phrases, settings.fallback_phrase]))
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # at start-up, before the service's loop: warm now, so the first call finds them
            asyncio.run(cached.warm())
        return cached
    if settings.tts_engine == "azure":
        from processors.tts.cloud import cloud_tts

        return cloud_tts(settings)
    raise ValueError(f"unknown TTS engine {settings.tts_engine!r} (choose: piper, azure)")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="switchboard tts", description="Text-to-speech: reply sentences in, agent audio out."
    ).parse_args(argv)
    settings = TtsSettings()
    logs.setup("tts", settings.log_level)
    serve(settings, Synthesizer(create_engine(settings), settings.chunk_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
