"""Run the turns processor: ``switchboard turns``."""

from __future__ import annotations

import argparse
import logging
import sys

from processors.turns import vad
from processors.turns.logic import TurnDetector
from processors.turns.settings import TurnsSettings
from switchboard import logs, tracing
from switchboard.runner import serve
from switchboard.settings import load_settings

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="switchboard turns", description="Turn-taking: voice activity, end of turn, barge-in."
    ).parse_args(argv)
    settings = load_settings(TurnsSettings, "switchboard turns")
    logs.setup("turns", settings.log_level)
    tracing.setup("turns", settings)  # OpenTelemetry spans of each turn, when an OTLP endpoint is set
    smart_turn = None
    if settings.smart_turn:
        from processors.turns.smart_turn import SmartTurn

        try:
            smart_turn = SmartTurn()
        except RuntimeError as exc:
            # the pipecat-ai wheel (which ships the model) is missing: say so once, no traceback, no download
            logger.error("smart turn cannot start", extra={"fields": {"reason": str(exc)}})
            print(f"switchboard turns: {exc} (or set SWITCHBOARD_SMART_TURN=false)", file=sys.stderr)
            return 2
    serve(settings, TurnDetector(settings, vad.factory(settings), smart_turn))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
