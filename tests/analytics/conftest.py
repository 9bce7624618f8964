"""Fixtures of the analytics tests: one embedded chDB per test session (chDB
allows one path per process), a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks.store import Store


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("chdb") / "clickhouse"
    dsn = f"chdb://{path}"
    # Keep one client open all session: closing the last client shuts the in-process engine down.
    anchor = Store(dsn, "default")
    yield dsn
    anchor.close()


@pytest.fixture
def store(chdb_dsn: str) -> Iterator[Store]:
    s = Store(chdb_dsn, f"t{uuid.uuid4().hex[:10]}")
    s.ensure_schema()
    yield s
    s.client.command(f"DROP DATABASE IF EXISTS {s.database}")
    s.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
