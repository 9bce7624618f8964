"""ClickHouse through clickhouse-connect: the same code and DDL for embedded chDB
(``chdb:///path``) and a ClickHouse server (``http(s)://host:8123``).

chDB runs in-process and locks its path: one process at a time. The sink owns
it and lends read access to other processes through ``sinks.query_server``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from sinks.landing import LANDINGS, landing_ddl, landing_table

SQL_DIR = Path(__file__).resolve().parent / "sql"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def statements(sql: str) -> list[str]:
    """Split a .sql file into statements (no ';' inside our string literals or comments)."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def connect(dsn: str, database: str | None = None) -> Client:
    if database is not None and not _IDENT.match(database):
        raise ValueError(f"invalid database name {database!r}")
    if database is None:
        return clickhouse_connect.get_client(dsn=dsn)
    # on "default": the DSN may name our database in its path before it exists
    bootstrap = clickhouse_connect.get_client(dsn=dsn, database="default")
    try:
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    finally:
        if not dsn.startswith("chdb:"):
            bootstrap.close()
    client = clickhouse_connect.get_client(dsn=dsn, database=database)
    if dsn.startswith("chdb:"):
        # Closing the last chDB client closes the engine; keep the bootstrap open with the other.
        client._switchboard_bootstrap = bootstrap  # type: ignore[attr-defined]
    return client


def is_chdb(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def chdb_path(dsn: str) -> str:
    return str(Path(dsn.removeprefix("chdb://").split("?")[0]).resolve())


class Store:
    """The analytics database: schema, inserts, the calls rebuild and read queries.

    A connection runs one statement at a time (its lock); the sink's query endpoint
    shares the writer's, and ``lanes`` adds connections for writing tables side by side."""

    def __init__(self, dsn: str, database: str = "switchboard", lock: threading.Lock | None = None) -> None:
        self.dsn = dsn
        self.database = database
        self.client = connect(dsn, database)
        self.lock = lock or threading.Lock()
        self._lanes: list[Store] = []

    def lanes(self, n: int) -> list[Store]:
        """``n`` connections for writing several tables at once: this one, then ones of their own
        (chDB runs statements of different connections side by side; each connection, one at a time)."""
        while len(self._lanes) < n - 1:
            self._lanes.append(Store(self.dsn, self.database))
        return [self, *self._lanes[: n - 1]]

    def reader(self) -> Store:
        """A second connection for read-only use. chDB keeps per-query settings such as
        ``readonly`` on the connection, so readers must never share the writer's."""
        return Store(self.dsn, self.database, self.lock)

    def ensure_schema(self, retention_days: int = 395, transcript_retention_days: int = 90) -> None:
        landings = {f"{landing.stem}_landing": landing_table(cls) for cls, landing in LANDINGS.items()}
        ddl = (SQL_DIR / "schema.sql").read_text().format(
            retention_days=int(retention_days), transcript_retention_days=int(transcript_retention_days), **landings
        )
        # the landing tables first: the materialized views of schema.sql read them
        with self.lock:
            for stmt in [landing_ddl(cls) for cls in LANDINGS] + statements(ddl):
                self.client.command(stmt)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            # Column-oriented: clickhouse-connect serialises whole columns, about twice as fast as rows.
            data = list(zip(*rows, strict=True))
            with self.lock:
                self.client.insert(table, data, column_names=list(columns), column_oriented=True)

    def insert_avro(self, table: str, container: bytes) -> None:
        """Insert an Avro object container; ClickHouse decodes it (see ``sinks.landing``)."""
        with self.lock:
            self.client.raw_insert(table, None, container, fmt="Avro")

    def rebuild_calls(self, call_ids: Iterable[str]) -> None:
        ids = sorted(set(call_ids))
        if not ids:
            return
        sql = (SQL_DIR / "rebuild_calls.sql").read_text()
        for i in range(0, len(ids), 5000):
            chunk = "(" + ",".join(quote(c) for c in ids[i:i + 5000]) + ")"
            with self.lock:
                self.client.command(statements(sql)[0].replace("{ids}", chunk))

    def query(self, sql: str, settings: dict[str, Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self.lock:
            result = self.client.query(sql, settings=settings)
        return list(result.column_names), [tuple(r) for r in result.result_rows]

    def raw(self, sql: str, fmt: str = "JSONCompact", settings: dict[str, Any] | None = None) -> bytes:
        with self.lock:
            return self.client.raw_query(sql, fmt=fmt, settings=settings)

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()
        with self.lock:
            self.client.close()
            bootstrap = getattr(self.client, "_switchboard_bootstrap", None)
            if bootstrap is not None:
                bootstrap.close()
