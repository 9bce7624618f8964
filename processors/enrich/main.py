"""Run the enrich processor: ``switchboard enrich`` / ``python -m processors.enrich.main``."""

from __future__ import annotations

import argparse

from processors.enrich.logic import Enricher
from processors.enrich.settings import EnrichSettings
from switchboard import logs, tracing
from switchboard.redact import Redactor, install_log_redaction
from switchboard.runner import serve
from switchboard.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="switchboard enrich",
        description="Post-call enrichment: summary, sentiment per caller turn and per call, intent, goal reached or "
        "handed off, published to the summaries topic for the ClickHouse sink.",
    ).parse_args(argv)
    settings = load_settings(EnrichSettings, "switchboard enrich")
    logs.setup("enrich", settings.log_level)
    tracing.setup("enrich", settings)  # OpenTelemetry spans of each turn, when an OTLP endpoint is set
    install_log_redaction(Redactor())
    serve(settings, Enricher(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
