"""docs/analytics.md documents every table column, report and setting of the analytics side."""

from __future__ import annotations

import re
from pathlib import Path

from processors.enrich.settings import EnrichSettings
from sinks.report import REPORTS_DIR
from sinks.settings import SinkSettings
from sinks.store import SQL_DIR
from switchboard.settings import ServiceSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "analytics.md").read_text()


def test_every_column_of_every_table_is_documented() -> None:
    ddl = (SQL_DIR / "schema.sql").read_text()
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*?)\n\)\nENGINE", ddl, re.S):
        section = DOC.split(f"### `{table}`", 1)[1].split("\n### ", 1)[0]
        for column in re.findall(r"^\s*(\w+)\s+\S", body, re.M):
            assert f"| `{column}` |" in section, f"{table}.{column} is not documented"


def test_every_report_and_setting_is_documented() -> None:
    for sql in REPORTS_DIR.glob("*.sql"):
        assert f"`{sql.name}`" in DOC
    for cls in (SinkSettings, EnrichSettings):
        for name in set(cls.model_fields) - set(ServiceSettings.model_fields):
            assert f"SWITCHBOARD_{name.upper()}" in DOC
