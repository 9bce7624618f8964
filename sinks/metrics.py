"""Prometheus metrics of the ClickHouse sink."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from switchboard.metrics import LATENCY_BUCKETS

ROWS_INSERTED = Counter("switchboard_sink_rows_inserted_total", "rows inserted into ClickHouse", ["table"])
FLUSH_FAILURES = Counter("switchboard_sink_flush_failures_total", "batches ClickHouse rejected (retried)")
FLUSH_SECONDS = Histogram("switchboard_sink_flush_seconds", "insert + calls rebuild + commit of one batch",
                          buckets=LATENCY_BUCKETS)
BATCH_ROWS = Histogram("switchboard_sink_batch_rows", "rows per flushed batch",
                       buckets=(1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000))
FRESHNESS = Histogram("switchboard_sink_freshness_seconds", "record produced → inserted into ClickHouse",
                      buckets=LATENCY_BUCKETS)
QUERIES = Counter("switchboard_sink_queries_total", "requests to the report endpoint, by outcome (ok, error, "
                  "unauthorized, refused, not_found)", ["status"])
BAD_PLAYBACK_POSITIONS = Counter("switchboard_sink_bad_playback_positions_total",
                                 "PLAYBACK_CLEARED events with unreadable playback positions (stored as unknown)")
