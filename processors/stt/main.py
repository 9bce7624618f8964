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
    raise ValueError(f"unknown STT engine {settings.stt_engine!r} (choose: whisper)")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="switchboard stt", description="Speech-to-text: a turn's audio in, its transcript out.").parse_args(argv)
    settings = SttSettings()
    logs.setup("stt", settings.log_level)
    serve(settings, Transcriber(create_engine(settings)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
