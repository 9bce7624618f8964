"""Run the STT processor: ``switchboard stt``."""

from __future__ import annotations

import argparse
import logging
import sys

from processors.stt.engine import SpeechToText
from processors.stt.logic import Transcriber
from processors.stt.moonshine_convert import ModelMissing
from processors.stt.settings import SttSettings
from switchboard import logs, tracing
from switchboard.redact import Redactor
from switchboard.runner import serve
from switchboard.settings import load_settings

logger = logging.getLogger(__name__)
ENGINES = ("moonshine", "whisper", "azure")


def create_offline(settings: SttSettings, name: str = "moonshine") -> SpeechToText:
    """An offline recogniser (no network): the default, and the cloud engine's fallback."""
    if name == "moonshine":
        from processors.stt.moonshine import MoonshineEngine

        return MoonshineEngine(settings.models_dir, settings.moonshine_threads, settings.moonshine_batch)
    from processors.stt.whisper import WhisperEngine

    return WhisperEngine(settings.whisper_compute_type, settings.whisper_threads, settings.whisper_beam_size)


def create_engine(settings: SttSettings) -> SpeechToText:
    if settings.stt_engine in ("moonshine", "whisper"):
        return create_offline(settings, settings.stt_engine)
    if settings.stt_engine == "azure":
        from processors.resilience import EngineGuard
        from processors.stt.azure import AzureStt
        from processors.stt.fallback import ResilientStt

        guard = EngineGuard("stt", "azure", timeout_s=settings.stt_final_s, fail_max=settings.stt_breaker_failures,
                            reset_s=settings.stt_breaker_reset_s)
        cloud = AzureStt(settings.azure_speech(), settings.azure_stt_languages, settings.azure_stt_chunk_ms)
        return ResilientStt(cloud, create_offline(settings), guard, settings.stt_final_s)
    raise ValueError(f"unknown STT engine {settings.stt_engine!r} (choose: {', '.join(ENGINES)})")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="switchboard stt", description="Speech-to-text: a turn's audio in, its transcript out."
    ).parse_args(argv)
    settings = load_settings(SttSettings, "switchboard stt")
    logs.setup("stt", settings.log_level)
    tracing.setup("stt", settings)  # OpenTelemetry spans of each turn, when an OTLP endpoint is set
    try:
        engine = create_engine(settings)
    except ModelMissing as exc:
        # A set-up step was skipped: say which, once, instead of a traceback (and never download at run time).
        logger.error("stt engine cannot start", extra={"fields": {"engine": settings.stt_engine, "reason": str(exc)}})
        print(f"switchboard stt: {exc}", file=sys.stderr)
        return 2
    serve(settings, Transcriber(engine, redact=Redactor() if settings.redact_transcripts else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
