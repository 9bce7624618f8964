"""``switchboard report``: run the BI queries in ``sinks/sql/reports/`` and print
them as tables; ``--plot DIR`` also draws PNG charts.

Every query is named: the reports, and the few in ``sinks/sql/queries/`` that
charts and operators use. Nothing here, nor in the sink's endpoint, runs SQL
that came from anywhere else.

Where the data is read from:
- a ClickHouse server DSN (``http(s)://``): directly;
- an embedded chDB DSN: through the running sink's report endpoint when it
  answers for that path (chDB lets one process open a path at a time; the
  endpoint needs ``SWITCHBOARD_QUERY_TOKEN``), else by opening the path
  directly (the sink is stopped).
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from sinks.settings import SinkSettings
from sinks.store import SQL_DIR, Store, chdb_path, is_chdb

REPORTS_DIR = SQL_DIR / "reports"
QUERIES_DIR = SQL_DIR / "queries"  # named queries that are not printed as reports (charts, operations)
ORDER = ("recent_calls", "recent_turns", "recent_transcripts", "calls_per_hour", "average_handle_time",
         "containment_rate", "latency_percentiles", "barge_in_rate", "fallback_rate", "fallbacks_by_engine",
         "top_intents", "sentiment_trend", "cost_per_call", "cost_by_engine")
STAGES = ("response", "processing", "turn_detection", "stt", "agent", "tts", "bus_overhead")
Rows = tuple[list[str], list[tuple[Any, ...]]]


def named_queries() -> dict[str, str]:
    """Every query that may run, by name: the reports, then the other named queries."""
    out = {p.stem: p.read_text() for p in sorted(REPORTS_DIR.glob("*.sql"))}
    for p in sorted(QUERIES_DIR.glob("*.sql")):
        if p.stem in out:
            raise RuntimeError(f"{p} has the name of a report")
        out[p.stem] = p.read_text()
    return out


def _title(sql: str, name: str) -> str:
    comments = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        comments.append(line.removeprefix("--").strip())
    return " ".join(comments) or name


def titles() -> dict[str, str]:
    return {name: _title(sql, name) for name, sql in named_queries().items()}


class Reader(Protocol):
    def run(self, name: str) -> Rows: ...

    def close(self) -> None: ...


class StoreReader:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.queries = named_queries()

    def run(self, name: str) -> Rows:
        if name not in self.queries:
            raise ValueError(f"no query named {name!r}")
        return self.store.query(self.queries[name])

    def close(self) -> None:
        self.store.close()


class HttpReader:
    """Reads through a sink's report endpoint (see ``sinks.query_server``)."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _get(self, path: str, timeout_s: float) -> Any:
        req = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read())

    def ping(self) -> dict[str, Any] | None:
        try:
            return self._get("/ping", 1.0)
        except (OSError, ValueError):
            return None

    def run(self, name: str) -> Rows:
        try:
            body = self._get(f"/reports/{quote(name, safe='')}", self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{exc.code}: {exc.read().decode('utf-8', 'replace')}") from exc
        return [m["name"] for m in body["meta"]], [tuple(r) for r in body["data"]]

    def close(self) -> None:
        pass


def client_token(settings: SinkSettings) -> str:
    """The report endpoint's token as a client finds it: the settings, else what `switchboard up` generated."""
    from switchboard.credentials import ClientCredentials

    return settings.query_token_value() or ClientCredentials.load().query_token


def open_reader(settings: SinkSettings, query_url: str | None = None) -> Reader:
    token = client_token(settings)
    if query_url:
        if not token:
            raise RuntimeError("the report endpoint needs a token: set SWITCHBOARD_QUERY_TOKEN (`switchboard up` "
                               "keeps the one it generated in .switchboard/credentials.json)")
        return HttpReader(query_url, token)
    dsn = settings.clickhouse_dsn
    if is_chdb(dsn) and settings.query_port and token:
        http = HttpReader(settings.query_url, token)
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
            f"cannot open {dsn}: {exc}. If a sink owns this chDB path, give it and this command the same "
            "SWITCHBOARD_QUERY_TOKEN (`switchboard up` does) or stop it first."
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
        out.append(Report(n, _title(sql, n), sql))
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
        columns, rows = reader.run(rep.name)
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
    _, rows = reader.run("latency_samples")
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

    _, rows = reader.run("calls_per_hour")  # (hour, channel, calls): summed over the channels
    per_hour: dict[dt.datetime, int] = defaultdict(int)
    for hour, _channel, calls in rows:
        per_hour[hour if isinstance(hour, dt.datetime) else dt.datetime.fromisoformat(str(hour))] += int(calls)
    hours = sorted(per_hour)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(hours, [per_hour[h] for h in hours], width=1 / 24 * 0.8)
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
