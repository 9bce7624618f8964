"""Every BI query in sinks/sql/reports/ against the embedded ClickHouse, on a known set of calls."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from calls_data import DAY, LATENCIES, NEXT_DAY, exact, known_calls, load

from sinks.query_server import QueryServer
from sinks.report import QUERIES_DIR, REPORTS_DIR, HttpReader, StoreReader, named_queries, plot, reports, run_reports
from sinks.store import Store

D, D1 = DAY.date(), NEXT_DAY.date()
TOKEN = "reports-test-token-0123456789"


def hour(day: dt.datetime, h: int) -> dt.datetime:
    return (day + dt.timedelta(hours=h)).replace(tzinfo=None)


def stage_row(stage: str, attr: str) -> tuple[Any, ...]:
    values = [getattr(lat, attr) for lat in LATENCIES.values()]
    return (stage, 4, *(exact(values, q) for q in (0.5, 0.9, 0.95, 0.99)), max(values))


EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "calls_per_hour": [(hour(DAY, 9), "twilio", 2), (hour(DAY, 10), "json", 1), (hour(NEXT_DAY, 14), "acs", 2)],
    "average_handle_time": [(D, 3, 70.0, 60.0, 120.0), (D1, 1, 300.0, 300.0, 300.0)],
    "containment_rate": [(D, 3, 1, 2, 0.667, 0.667), (D1, 1, 0, 0, 1.0, 0.0)],
    "latency_percentiles": [
        stage_row("response", "response"), stage_row("processing", "processing"),
        stage_row("turn_detection", "turn_detection"), stage_row("stt", "stt"), stage_row("agent", "agent"),
        stage_row("tts", "tts"), stage_row("bus_overhead", "bus"),
    ],
    "barge_in_rate": [(D, 4, 1, 0.25, 180.0, 180.0)],
    "fallback_rate": [(D, 3, 1, 0, 0.333, 0.25), (D1, 2, 0, 0, 0.0, None)],
    "fallbacks_by_engine": [("stt", "azure", "whisper", 1, 1)],
    "top_intents": [("book", 1, 1, 0, 0.6), ("hours", 1, 1, 0, 0.1), ("human", 1, 0, 1, -0.5)],
    "sentiment_trend": [(D, 3, 0.067, 2, 1)],
    "cost_per_call": [(D, 3, 0.016, 0.0053, 0.0046), (D1, 2, 0.0, 0.0, 0.0)],
    "cost_by_engine": [
        ("agent", "openai", 2, 180, 0.0, 0, 0.014), ("stt", "whisper", 2, 0, 5.5, 0, 0.0),
        ("tts", "azure", 1, 0, 0.0, 40, 0.002), ("tts", "piper", 1, 0, 0.0, 45, 0.0),
    ],
    "recent_turns": [("c3", 1, 600.0, 400.0, 200.0, 200.0, 5.0, 100.0, 95.0)],
    "recent_transcripts": [
        ("c3", 1, "caller", "What are your opening hours? My email is [EMAIL]"),
        ("c3", 1, "agent", "We are open Monday to Friday."),
    ],
}


@pytest.fixture
def loaded(store: Store) -> Store:
    load(store, known_calls())
    return store


def approx_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(pytest.approx(v, abs=1e-4) if isinstance(v, float) else v for v in r) for r in rows]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_report_query_returns_the_expected_rows_for_the_known_calls(loaded: Store, name: str) -> None:
    sql = (REPORTS_DIR / f"{name}.sql").read_text()
    _, rows = loaded.query(sql)
    assert rows == approx_rows(EXPECTED[name])


def test_recent_calls_lists_every_call_newest_first_with_outcome_and_redacted_summary(loaded: Store) -> None:
    columns, rows = loaded.query((REPORTS_DIR / "recent_calls.sql").read_text())
    got = [dict(zip(columns, r, strict=True)) for r in rows]
    assert [c["call_id"] for c in got] == ["c5", "c4", "c3", "c2", "c1"]
    by_id = {c["call_id"]: c for c in got}
    assert by_id["c1"] | {"started_at": None} == {
        "call_id": "c1", "started_at": None, "duration_s": 120.0, "channel": "twilio", "caller": "***2671",
        "outcome": "resolved", "intent": "book", "turns": 2, "barge_ins": 1, "sentiment": pytest.approx(0.6),
        "cost_usd": pytest.approx(0.012), "summary": "Booked Tuesday 3 PM; card [CARD]",
    }
    assert (by_id["c2"]["outcome"], by_id["c4"]["outcome"], by_id["c5"]["outcome"]) == (
        "handoff", "dropped", "in_progress")
    assert by_id["c5"]["duration_s"] is None


def test_every_sql_file_is_covered_by_an_expectation() -> None:
    names = {p.stem for p in Path(REPORTS_DIR).glob("*.sql")}
    assert names == set(EXPECTED) | {"recent_calls"}


def test_report_prints_a_table_per_query(loaded: Store) -> None:
    text = run_reports(StoreReader(loaded))
    for rep in reports():
        assert f"== {rep.name}:" in text
    assert "[CARD]" in text or "[EMAIL]" in text
    assert "4111" not in text


def test_report_reads_through_the_sinks_endpoint_with_the_same_rows(loaded: Store) -> None:
    server = QueryServer(loaded, "127.0.0.1", 0, TOKEN).start()
    try:
        http = HttpReader(server.url, TOKEN)
        assert http.ping()["database"] == loaded.database
        _, direct = loaded.query((REPORTS_DIR / "top_intents.sql").read_text())
        _, remote = http.run("top_intents")
        assert [list(r) for r in remote] == [list(r) for r in direct]
        assert "c1" in run_reports(http, ["recent_calls"])
    finally:
        server.stop()


def test_latency_samples_are_one_row_per_turn_and_stage(loaded: Store) -> None:
    _, rows = StoreReader(loaded).run("latency_samples")
    assert sorted(ms for stage, ms in rows if stage == "response") == sorted(
        lat.response for lat in LATENCIES.values())
    assert {stage for stage, _ in rows} == {"response", "processing", "turn_detection", "stt", "agent", "tts",
                                            "bus_overhead"}


def test_table_rows_counts_each_table_as_stored_and_deduplicated(loaded: Store) -> None:
    columns, rows = StoreReader(loaded).run("table_rows")
    assert columns == ["table_name", "stored_rows", "rows"]
    got = {r[0]: (r[1], r[2]) for r in rows}
    assert set(got) == {"calls", "turns", "transcripts", "events", "engine_usage", "call_summaries", "reply_playback"}
    for table, (stored, final) in got.items():
        assert final == loaded.query(f"SELECT count() FROM {table} FINAL")[1][0][0]
        assert stored >= final
    assert got["calls"][1] == 5


def test_named_queries_are_the_reports_and_the_chart_and_operations_queries() -> None:
    names = set(named_queries())
    assert names == {p.stem for p in REPORTS_DIR.glob("*.sql")} | {p.stem for p in QUERIES_DIR.glob("*.sql")}
    assert {"latency_samples", "table_rows", "recent_calls"} <= names


def test_plot_writes_latency_and_calls_over_time_charts(loaded: Store, tmp_path: Path) -> None:
    paths = plot(StoreReader(loaded), tmp_path)
    assert {p.name for p in paths} == {"latency_per_stage.png", "calls_over_time.png"}
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
