"""``switchboard report``: run the BI queries in ``sinks/sql/reports/`` and print
them as tables; ``--plot DIR`` also draws PNG charts.

Where the data is read from:
- a ClickHouse server DSN (``http(s)://``): directly;
- an embedded chDB DSN: through the running sink's read-only SQL endpoint when
  it answers for that path (chDB lets one process open a path at a time), else
  by opening the path directly (the sink is stopped).
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sinks.settings import SinkSettings
from sinks.store import SQL_DIR, Store, chdb_path, is_chdb

REPORTS_DIR = SQL_DIR / "reports"
ORDER = ("recent_calls", "recent_turns", "recent_transcripts", "calls_per_hour", "average_handle_time",
         "containment_rate", "latency_percentiles", "barge_in_rate", "fallback_rate", "fallbacks_by_engine",
         "top_intents", "sentiment_trend", "cost_per_call", "cost_by_engine")
STAGES = ("response", "processing", "turn_detection", "stt", "agent", "tts", "bus_overhead")
LATENCY_SAMPLES = f"""
SELECT stage, ms FROM turns FINAL
ARRAY JOIN {list(STAGES)} AS stage,
    [response_ms, processing_ms, turn_detection_ms, stt_ms, agent_ms, tts_ms, bus_overhead_ms] AS ms
WHERE ms IS NOT NULL
"""
Rows = tuple[list[str], list[tuple[Any, ...]]]


class Reader(Protocol):
    def query(self, sql: str) -> Rows: ...

    def close(self) -> None: ...


class StoreReader:
    def __init__(self, store: Store) -> None:
        self.store = store

    def query(self, sql: str) -> Rows:
        return self.store.query(sql)

    def close(self) -> None:
        self.store.close()


class HttpReader:
    """Reads through a sink's query endpoint (see ``sinks.query_server``)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def ping(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1.0) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def query(self, sql: str) -> Rows:
        req = urllib.request.Request(f"{self.url}/query?format=JSONCompact", data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(exc.read().decode("utf-8", "replace")) from exc
        return [m["name"] for m in body["meta"]], [tuple(r) for r in body["data"]]

    def close(self) -> None:
        pass


def open_reader(settings: SinkSettings, query_url: str | None = None) -> Reader:
    if query_url:
        return HttpReader(query_url)
    dsn = settings.clickhouse_dsn
    if is_chdb(dsn) and settings.query_port:
        http = HttpReader(settings.query_url)
        info = http.ping()
        if info and is_chdb(info.get("dsn", "")) and chdb_path(info["dsn"]) == chdb_path(dsn):
            return http
    try:
        store = Store(dsn, settings.clickhouse_database)
        if is_chdb(dsn):
            # nobody owns this embedded database: make sure its tables exist, so an empty one reports "no rows"
            store.ensure_schema(settings.retention_days, settings.transcript_retention_days)
        return StoreReader(store)
    except Exception as exc:
        raise RuntimeError(
            f"cannot open {dsn}: {exc}. If a sink owns this chDB path, give it a query port "
            "(SWITCHBOARD_QUERY_PORT) or stop it first."
        ) from exc


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    title: str
    sql: str


def reports(only: list[str] | None = None) -> list[Report]:
    files = {p.stem: p for p in REPORTS_DIR.glob("*.sql")}
    names = [n for n in ORDER if n in files] + sorted(set(files) - set(ORDER))
    if only:
        unknown = set(only) - set(files)
        if unknown:
            raise ValueError(f"unknown report(s) {sorted(unknown)}; choose from {names}")
        names = [n for n in names if n in only]
    out = []
    for n in names:
        sql = files[n].read_text()
        comments = []
        for line in sql.splitlines():
            if not line.startswith("--"):
                break
            comments.append(line.removeprefix("--").strip())
        out.append(Report(n, " ".join(comments) or n, sql))
    return out


def cell(value: Any, width: int = 60) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        value = ",".join(cell(v) for v in value)
    if isinstance(value, dict):
        value = ",".join(f"{k}:{cell(v)}" for k, v in value.items())
    text = str(value)
    if len(text) > 19 and text[:4].isdigit() and text[4:5] == "-" and text[10:11] == " ":
        text = text[:19]  # DateTime64 text from the HTTP endpoint
    return text if len(text) <= width else text[: width - 1] + "…"


def table(columns: list[str], rows: list[tuple[Any, ...]], width: int = 60) -> str:
    cells = [[cell(v, width) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    if not rows:
        lines.append("(no rows)")
    return "\n".join(lines)


def run_reports(reader: Reader, only: list[str] | None = None, width: int = 60) -> str:
    parts = []
    for rep in reports(only):
        columns, rows = reader.query(rep.sql)
        parts.append(f"== {rep.name}: {rep.title}\n{table(columns, rows, width)}\n")
    return "\n".join(parts)


def plot(reader: Reader, out_dir: Path) -> list[Path]:
    """PNG charts: latency distribution per stage, calls over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    _, rows = reader.query(LATENCY_SAMPLES)
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    for stage, ms in rows:
        samples[stage].append(float(ms))
    present = [s for s in STAGES if samples[s]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if present:
        ax.boxplot([samples[s] for s in present], tick_labels=present, showfliers=True)
    ax.set_yscale("log")  # engines take ms, turns take seconds: one linear axis hides the small ones
    ax.set_ylabel("ms (log scale)")
    ax.set_title("Latency per stage (per turn)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out_dir / "latency_per_stage.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    _, rows = reader.query(
        "SELECT toStartOfHour(started_at) AS hour, count() FROM calls FINAL GROUP BY hour ORDER BY hour"
    )
    hours = [r[0] if isinstance(r[0], dt.datetime) else dt.datetime.fromisoformat(str(r[0])) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(hours, [int(r[1]) for r in rows], width=1 / 24 * 0.8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("calls")
    ax.set_xlabel("hour (UTC)")
    ax.set_title("Calls per hour")
    fig.autofmt_xdate()
    fig.tight_layout()
    path = out_dir / "calls_over_time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
