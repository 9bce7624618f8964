"""Settings of the ClickHouse sink (``switchboard sink``) and of ``switchboard report``.

Every field is an environment variable ``SWITCHBOARD_<NAME>``; docs/analytics.md lists them with defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from switchboard.redact import ALL_KINDS, CARD, DOB, EMAIL, PHONE, SSN, Redactor
from switchboard.settings import ServiceSettings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "chdb://.switchboard/clickhouse"


class SinkSettings(ServiceSettings):
    # Analytics is not on the voice path: a longer fetch wait spares the polling CPU the
    # real-time processors need, and still keeps rows fresh well within 2 s.
    fetch_max_wait_ms: int = Field(250, ge=0, description="consumer fetch wait (the sink is not on the voice path)")
    clickhouse_dsn: str = Field(
        DEFAULT_DSN,
        description="ClickHouse: chdb:///abs/path or chdb://rel/path (embedded, in-process, relative to the "
        "repository; one process owns a path) or http(s)://user:password@host:8123 (a ClickHouse server)",
    )
    clickhouse_database: str = Field("switchboard", description="database holding the analytics tables")
    batch_max_rows: int = Field(100_000, ge=1, description="flush the buffer once it holds this many rows "
                                "(up to twice as many while two writes are in flight)")
    batch_max_seconds: float = Field(0.5, gt=0, description="flush the buffer at least this often (bounds freshness)")
    insert_retry_seconds: float = Field(1.0, gt=0, description="wait between attempts when ClickHouse rejects a flush")
    fetch_max_records: int = Field(20_000, ge=1, description="records taken from Kafka per poll")
    sink_group_id: str = Field(
        "switchboard-sink", description="consumer group of the sink (with a ClickHouse server, scale by adding members)"
    )
    retention_days: int = Field(395, ge=1, description="TTL of calls, turns, events and engine usage rows")
    transcript_retention_days: int = Field(90, ge=1, description="TTL of transcript rows (the most sensitive table)")
    query_host: str = Field("127.0.0.1", description="address of the sink's report endpoint (keep it on loopback)")
    query_port: int = Field(
        8124, ge=0, description="port of the report endpoint through which `switchboard report` reads an embedded "
        "chDB owned by the running sink: named reports only, no SQL (0 = off)"
    )
    query_token: SecretStr = Field(
        SecretStr(""), description="bearer token of the report endpoint; the endpoint is off unless this or "
        "query_token_file gives one (`switchboard up` generates it)"
    )
    query_token_file: str = Field(
        "", description="file holding the report endpoint's token when query_token is unset (a mounted secret)"
    )
    redact: bool = Field(True, description="mask PII before it reaches ClickHouse or the logs (master switch)")
    redact_cards: bool = Field(True, description="mask card numbers that pass the Luhn check → [CARD]")
    redact_ssn: bool = Field(True, description="mask US social security numbers → [SSN]")
    redact_phones: bool = Field(True, description="mask phone numbers → [PHONE]")
    redact_emails: bool = Field(True, description="mask e-mail addresses, written or spoken → [EMAIL]")
    redact_dob: bool = Field(True, description="mask dates of birth → [DOB]")
    dob_min_years: int = Field(10, ge=0, description="a full date at least this many years ago counts as a birth date")
    commit_delay_s: float = Field(
        0.0, ge=0, description="fault injection for tests: pause between a successful insert and the offset commit, "
        "widening the window in which a crash leaves rows written but not committed"
    )
    caller_hash_salt: str = Field(
        "switchboard", description="key of calls.caller_hash for call events that carry a raw number and no "
        "caller_hash attribute (the ingress hashes with SWITCHBOARD_CALLER_HASH_KEY; give both the same secret)"
    )

    @field_validator("clickhouse_dsn")
    @classmethod
    def _anchor_relative_chdb_path(cls, dsn: str) -> str:
        # chdb://rel/path would otherwise read as host "rel"; anchor it at the repository, not the cwd,
        # so the sink and `switchboard report` find the same directory from anywhere.
        rest = dsn.removeprefix("chdb://")
        if dsn.startswith("chdb://") and rest and not rest.startswith(("/", "memory", ":memory:")):
            return f"chdb://{REPO / rest}"
        return dsn

    def redactor(self) -> Redactor:
        chosen = {CARD: self.redact_cards, SSN: self.redact_ssn, PHONE: self.redact_phones, EMAIL: self.redact_emails,
                  DOB: self.redact_dob}
        kinds = frozenset(k for k in ALL_KINDS if self.redact and chosen[k])
        return Redactor(kinds=kinds, dob_min_years=self.dob_min_years)

    def query_token_value(self) -> str:
        """The report endpoint's token: the setting, else the token file, else "" (endpoint off)."""
        if token := self.query_token.get_secret_value().strip():
            return token
        if not self.query_token_file:
            return ""
        try:
            return Path(self.query_token_file).expanduser().read_text().strip()
        except OSError:
            return ""

    @property
    def query_url(self) -> str:
        return f"http://{self.query_host}:{self.query_port}"
