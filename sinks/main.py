"""Run the ClickHouse sink: ``switchboard sink`` / ``python -m sinks.main``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal

from sinks.query_server import QueryServer
from sinks.settings import SinkSettings
from sinks.sink import Sink
from sinks.store import Store, is_chdb
from switchboard import logs, metrics, tracing
from switchboard.bus import wait_for_broker
from switchboard.redact import install_log_redaction
from switchboard.settings import load_settings

logger = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="switchboard sink",
        description="Write every call, turn, transcript, event and engine usage to ClickHouse, redacted, exactly "
        "once in effect. Settings: SWITCHBOARD_* environment variables (docs/analytics.md).",
    )
    p.add_argument("--dsn", help="override SWITCHBOARD_CLICKHOUSE_DSN")
    return p


def tune_gc() -> None:
    """Collect garbage less often. The sink allocates a few objects per record, almost none in
    cycles, so the default thresholds run the cyclic collector thousands of times a second over
    a heap that never changes (what start-up built is frozen out of its reach): about a tenth of
    the sink's CPU (bench/sink_throughput.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)


def start_report_endpoint(settings: SinkSettings, store: Store) -> QueryServer | None:
    """The endpoint exists for an embedded chDB only (with a server, BI tools read the server) and
    is opt-in: it starts when a token is configured, never anonymous."""
    if not (is_chdb(settings.clickhouse_dsn) and settings.query_port):
        return None
    token = settings.query_token_value()
    if not token:
        logger.info("report endpoint off: no SWITCHBOARD_QUERY_TOKEN (nor SWITCHBOARD_QUERY_TOKEN_FILE)")
        return None
    if settings.query_host not in ("127.0.0.1", "::1", "localhost"):
        logger.warning("report endpoint bound beyond loopback", extra={"fields": {"host": settings.query_host}})
    return QueryServer(store, settings.query_host, settings.query_port, token).start()


async def run(settings: SinkSettings) -> None:
    store = Store(settings.clickhouse_dsn, settings.clickhouse_database)
    server: QueryServer | None = None
    try:
        store.ensure_schema(settings.retention_days, settings.transcript_retention_days)
        server = start_report_endpoint(settings, store)
        await wait_for_broker(settings)
        sink = Sink(settings, store)
        tune_gc()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, sink.stop)
        await sink.run()
    finally:
        if server is not None:
            server.stop()
        store.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = load_settings(SinkSettings, "switchboard sink")
    if args.dsn:
        settings = settings.model_copy(update={"clickhouse_dsn": args.dsn})
    logs.setup("sink", settings.log_level)
    tracing.setup("sink", settings)  # OpenTelemetry spans of each turn, when an OTLP endpoint is set
    install_log_redaction(settings.redactor())
    metrics.serve(settings.metrics_port, settings.metrics_host, "sink")
    asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
