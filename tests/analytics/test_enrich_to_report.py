"""The analytics path end to end on a real broker and the embedded ClickHouse: the pipeline's records
→ enrich (summaries) → sink → `switchboard report`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from calls_data import known_calls, sink_settings

from processors.enrich.logic import Enricher
from processors.enrich.settings import EnrichSettings
from sinks.query_server import QueryServer
from sinks.sink import Sink
from sinks.store import Store
from switchboard import cli
from switchboard.bus import Correlation, Publisher, make_producer
from switchboard.runner import Runner
from switchboard.settings import ServiceSettings
from switchboard.topics import SUMMARIES


@pytest.mark.timeout(120)
async def test_enriched_calls_reach_clickhouse_and_the_report_command_prints_them(
    bus_settings: ServiceSettings, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = make_producer(bus_settings)
    await producer.start()
    pub = Publisher(bus_settings, producer, "test")
    futures = [await pub.send(rec, Correlation(call_id=rec.call_id), topic=topic)
               for topic, rec in known_calls() if topic is not SUMMARIES]  # the enricher makes these
    await asyncio.gather(*futures)
    await producer.stop()

    runner = Runner(EnrichSettings(**bus_settings.model_dump()), Enricher(EnrichSettings()))
    sink = Sink(sink_settings(bus_settings, store), store)
    tasks = [asyncio.create_task(runner.run()), asyncio.create_task(sink.run())]
    try:
        for _ in range(300):
            _, rows = store.query(
                "SELECT call_id, outcome, intent FROM calls FINAL WHERE summary != '' ORDER BY call_id")
            if len(rows) == 4 and await sink.caught_up():
                break
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.2)
    finally:
        runner.stop()
        sink.stop()
        await asyncio.gather(*tasks)
    # c1 books and confirms, c2 asks for a human, c3 asks the hours (no goal to complete), c4 never spoke
    assert rows == [("c1", "resolved", "book"), ("c2", "handoff", "human"), ("c3", "unresolved", "hours"),
                    ("c4", "abandoned", "")]
    _, sent = store.query("SELECT call_id, sentiment > 0, length(turn_sentiment) FROM calls FINAL "
                          "WHERE call_id IN ('c1', 'c2') ORDER BY call_id")
    assert sent == [("c1", True, 2), ("c2", False, 1)]

    token = "enrich-to-report-token-0123456789"
    server = QueryServer(store, "127.0.0.1", 0, token).start()
    monkeypatch.setenv("SWITCHBOARD_QUERY_TOKEN", token)  # what `switchboard up` gives the sink and the report
    try:
        if "sinks.commands" not in cli.COMMANDS:  # until the lead's CLI lists it
            monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "sinks.commands"))
        code = await asyncio.to_thread(cli.main, ["report", "--query-url", server.url, "--plot", str(tmp_path)])
    finally:
        server.stop()
    out = capsys.readouterr().out
    assert code == 0
    assert "== recent_calls" in out and "== recent_turns" in out and "== recent_transcripts" in out
    assert "4111" not in out and "jane.doe" not in out
    assert "[EMAIL]" in out  # c3's redacted transcript is among the three most recent calls
    assert (tmp_path / "latency_per_stage.png").exists() and (tmp_path / "calls_over_time.png").exists()
