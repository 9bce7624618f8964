"""Run the turns processor: ``switchboard turns``."""

from __future__ import annotations

import argparse

from processors.turns import vad
from processors.turns.logic import TurnDetector
from processors.turns.settings import TurnsSettings
from switchboard import logs
from switchboard.runner import serve


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="switchboard turns", description="Turn-taking: voice activity, end of turn, barge-in."
    ).parse_args(argv)
    settings = TurnsSettings()
    logs.setup("turns", settings.log_level)
    serve(settings, TurnDetector(settings, vad.factory(settings)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
