"""Run the STT processor: ``switchboard stt``."""

from __future__ import annotations

import argparse

from processors.stt.engine import SpeechToText
from processors.stt.logic import Transcriber
from processors.stt.settings import SttSettings
from switchboard import logs
from switchboard.runner import serve


def create_engine(settings: SttSettings) -> SpeechToText:
    if settings.stt_engine == "whisper":
        from processors.stt.whisper import WhisperEngine

        return WhisperEngine(settings.whisper_compute_type, settings.whisper_threads, settings.whisper_beam_size)
    if settings.stt_engine == "azure":
        from processors.resilience import EngineGuard
        from processors.stt.azure import AzureStt
        from processors.stt.fallback import ResilientStt
        from processors.stt.whisper import WhisperEngine

        guard = EngineGuard("stt", "azure", timeout_s=settings.stt_final_s, fail_max=settings.stt_breaker_failures,
                            reset_s=settings.stt_breaker_reset_s)
        offline = WhisperEngine(settings.whisper_compute_type, settings.whisper_threads, settings.whisper_beam_size)
        cloud = AzureStt(settings.azure_speech(), settings.azure_stt_languages, settings.azure_stt_chunk_ms)
        return ResilientStt(cloud, offline, guard, settings.stt_final_s)
    raise ValueError(f"unknown STT engine {settings.stt_engine!r} (choose: whisper, azure)")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="switchboard stt", description="Speech-to-text: a turn's audio in, its transcript out."
    ).parse_args(argv)
    settings = SttSettings()
    logs.setup("stt", settings.log_level)
    serve(settings, Transcriber(create_engine(settings)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
