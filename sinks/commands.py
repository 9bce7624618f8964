"""CLI commands of the analytics side: ``switchboard report``.

(``switchboard sink`` and ``switchboard enrich`` come from ``switchboard.services``.)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def cmd_report(args: argparse.Namespace) -> int:
    from sinks.report import open_reader, plot, run_reports
    from sinks.settings import SinkSettings

    settings = SinkSettings()
    if args.dsn:
        settings = settings.model_copy(update={"clickhouse_dsn": args.dsn})
    try:
        reader = open_reader(settings, args.query_url)
    except RuntimeError as exc:
        print(f"switchboard report: {exc}", file=sys.stderr)
        return 1
    try:
        only = [n.strip() for n in args.only.split(",")] if args.only else None
        print(run_reports(reader, only, args.width))
        if args.plot:
            for path in plot(reader, args.plot):
                print(f"wrote {path}")
    except (RuntimeError, ValueError) as exc:  # an unknown report, a refused or failed query: say so, no traceback
        print(f"switchboard report: {exc}", file=sys.stderr)
        return 1
    finally:
        reader.close()
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="print the BI reports from ClickHouse (calls, turns, latencies, transcripts, rates, cost)",
        description="Run every query in sinks/sql/reports/ against ClickHouse and print the results as tables. "
        "With an embedded chDB DSN the data is read through the running sink's report endpoint (named reports "
        "only, bearer token SWITCHBOARD_QUERY_TOKEN, else the one `switchboard up` generated), or directly when "
        "no sink holds the database.",
    )
    p.add_argument("--dsn", help="ClickHouse DSN (default: SWITCHBOARD_CLICKHOUSE_DSN or the embedded chDB)")
    p.add_argument("--query-url", help="read through this sink's report endpoint (default: auto-detected)")
    p.add_argument("--only", help="comma-separated report names (e.g. recent_calls,latency_percentiles)")
    p.add_argument("--plot", type=Path, metavar="DIR", help="also write PNG charts into DIR")
    p.add_argument("--width", type=int, default=70, help="truncate cells to this many characters")
    p.set_defaults(func=cmd_report)
