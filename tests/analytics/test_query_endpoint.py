"""The sink's report endpoint: named reports only, behind a bearer token, on real chDB.

No request can make it run SQL of its own: not in a body, a query string, a path or a method other
than GET. A file it could read holds a marker that must never come back; a URL it could fetch is a
server on loopback that must never be hit; a file it could write must never appear.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from calls_data import known_calls, load
from prometheus_client import REGISTRY
from pydantic import SecretStr

from sinks.main import start_report_endpoint
from sinks.query_server import QueryServer
from sinks.report import HttpReader, named_queries, open_reader, run_reports
from sinks.settings import SinkSettings
from sinks.store import Store
from switchboard import cli, credentials
from switchboard.broker import free_port

TOKEN = "endpoint-test-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Tripwire:
    """A loopback HTTP server that records every request it gets: a fetched URL shows up here."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"hit")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stolen"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    t = Tripwire()
    yield t
    t.close()


@pytest.fixture
def server(store: Store) -> Iterator[QueryServer]:
    load(store, known_calls())
    s = QueryServer(store, "127.0.0.1", 0, TOKEN).start()
    yield s
    s.stop()


@pytest.fixture
def secret_file(tmp_path: Path) -> tuple[Path, str]:
    marker = "SECRET-" + uuid.uuid4().hex
    path = tmp_path / "secret.txt"
    path.write_text(marker + "\n")
    return path, marker


def request(server: QueryServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("switchboard_sink_queries_total", {"status": outcome}) or 0.0


def attacks(secret: Path, tripwire: Tripwire, written: Path) -> list[str]:
    return [
        f"SELECT * FROM file('{secret}', 'LineAsString')",
        f"SELECT file('{secret}')",
        "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
        f"SELECT * FROM url('{tripwire.url}', 'LineAsString')",
        f"INSERT INTO FUNCTION file('{written}', 'LineAsString') SELECT 'pwned'",
        "DROP TABLE calls",
    ]


# -- authentication ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/ping", "/reports", "/reports/recent_calls"])
@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
], ids=["anonymous", "wrong", "basic", "no-scheme", "prefix"])
def test_a_request_without_the_token_gets_401_and_no_data(
    server: QueryServer, path: str, headers: dict[str, str]
) -> None:
    before = counted("unauthorized")
    status, got, body = request(server, "GET", path, headers=headers)
    assert status == 401
    assert got["www-authenticate"].startswith("Bearer")
    assert b"c1" not in body and b"dsn" not in body
    assert counted("unauthorized") == before + 1


def test_the_endpoint_refuses_to_start_with_a_short_or_empty_token(store: Store) -> None:
    for token in ("", "short"):
        with pytest.raises(ValueError, match="token"):
            QueryServer(store, "127.0.0.1", 0, token)


# -- the named reports ---------------------------------------------------------------------------------
def test_the_listing_names_every_report_and_query(server: QueryServer) -> None:
    status, _, body = request(server, "GET", "/reports", headers=AUTH)
    assert status == 200
    listed = json.loads(body)["reports"]
    assert [r["name"] for r in listed] == list(named_queries())
    assert next(r for r in listed if r["name"] == "recent_calls")["title"] == "The 10 most recent calls."


@pytest.mark.parametrize("name", list(named_queries()))
def test_with_the_token_each_named_report_returns_its_rows(server: QueryServer, store: Store, name: str) -> None:
    status, headers, body = request(server, "GET", f"/reports/{name}", headers=AUTH)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert "access-control-allow-origin" not in headers
    got = json.loads(body)
    assert got["data"], f"{name} returned no rows on the known calls"
    _, direct = store.query(named_queries()[name])
    assert len(got["data"]) == len(direct)


def test_an_unknown_report_is_404(server: QueryServer) -> None:
    for path in ("/reports/nope", "/reports/", "/reports/RECENT_CALLS", "/reports/../schema", "/query", "/"):
        status, _, _ = request(server, "GET", path, headers=AUTH)
        assert status == 404, path


# -- no SQL of the caller's, anywhere --------------------------------------------------------------
def test_sql_sent_any_way_is_refused_and_reads_writes_and_fetches_nothing(
    server: QueryServer, secret_file: tuple[Path, str], tripwire: Tripwire, tmp_path: Path
) -> None:
    secret, marker = secret_file
    written = tmp_path / "written.txt"
    replies = []
    for sql in attacks(secret, tripwire, written):
        q = quote(sql, safe="")
        tries = [
            ("POST", "/query", sql.encode(), {**AUTH, "Content-Type": "text/plain"}, 405),
            ("POST", "/reports/recent_calls", sql.encode(), {**AUTH, "Content-Type": "text/plain"}, 405),
            ("POST", "/reports/recent_calls", f"sql={q}".encode(),
             {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, 405),
            ("PUT", "/reports/recent_calls", sql.encode(), AUTH, 405),
            ("GET", f"/query?sql={q}", None, AUTH, 400),
            ("GET", f"/?query={q}", None, AUTH, 400),
            ("GET", f"/reports/recent_calls?sql={q}", None, AUTH, 400),
            ("GET", f"/reports/recent_calls?param_limit={q}", None, AUTH, 400),
            ("GET", "/reports/recent_calls", sql.encode(), AUTH, 400),  # a GET with a body
            ("GET", f"/reports/{q}", None, AUTH, 404),
        ]
        for method, path, body, headers, expected in tries:
            status, _, reply = request(server, method, path, body, headers)
            assert status == expected, (method, path, reply)
            replies.append(reply)
    assert not any(marker.encode() in r for r in replies)
    assert not any(b"SWITCHBOARD" in r or b"PATH=" in r for r in replies)  # nothing of /proc/self/environ
    assert tripwire.hits == []
    assert not written.exists()


def test_a_cross_origin_text_plain_post_is_refused_without_cors(
    server: QueryServer, secret_file: tuple[Path, str]
) -> None:
    secret, marker = secret_file
    page = {"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"}
    # what a web page can send without a preflight: no Authorization header, a text/plain body
    status, headers, body = request(server, "POST", "/query", f"SELECT file('{secret}')".encode(), page)
    assert status == 405 and headers["allow"] == "GET"
    assert not any(k.startswith("access-control-") for k in headers)
    assert marker.encode() not in body
    # a preflight gets no CORS answer, and a browser's GET is refused even with the token
    status, headers, _ = request(server, "OPTIONS", "/reports/recent_calls",
                                 headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    assert status == 405 and not any(k.startswith("access-control-") for k in headers)
    status, _, body = request(server, "GET", "/reports/recent_calls", headers={**AUTH, "Origin": "http://evil.example"})
    assert status == 403 and b"c1" not in body


def test_the_reports_connection_itself_refuses_table_functions_writes_and_settings(
    server: QueryServer, secret_file: tuple[Path, str], tripwire: Tripwire, tmp_path: Path
) -> None:
    """Defence in depth: even SQL that got past the endpoint would meet a readonly=1 connection."""
    secret, _marker = secret_file
    written = tmp_path / "written.txt"
    conn = server.store
    refused = [
        f"SELECT * FROM file('{secret}', 'LineAsString')",
        f"SELECT * FROM url('{tripwire.url}', 'LineAsString')",
        "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        "SELECT * FROM executable('cat /etc/hostname', 'LineAsString', 'x String')",
        f"INSERT INTO FUNCTION file('{written}', 'LineAsString') SELECT 'pwned'",
        "INSERT INTO calls (call_id) VALUES ('x')",
        "DROP TABLE calls",
        "SELECT 1 SETTINGS readonly = 0",
    ]
    for sql in refused:
        with pytest.raises(Exception, match=r"(?i)readonly"):
            conn.raw(sql, fmt="TSV")
    assert tripwire.hits == [] and not written.exists()
    assert conn.raw("SELECT getSetting('readonly')", fmt="TSV").strip() == b"1"


# -- opt-in, and the report command --------------------------------------------------------------------
def test_the_sink_starts_no_endpoint_without_a_token(store: Store, tmp_path: Path) -> None:
    settings = SinkSettings(clickhouse_dsn=store.dsn, query_port=free_port(), query_token=SecretStr(""),
                            query_token_file=str(tmp_path / "none"))
    assert start_report_endpoint(settings, store) is None
    token_file = tmp_path / "query-token"
    token_file.write_text(TOKEN + "\n")
    server = start_report_endpoint(settings.model_copy(update={"query_token_file": str(token_file)}), store)
    assert server is not None
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert request(server, "GET", "/ping", headers=AUTH)[0] == 200
    finally:
        server.stop()


def test_report_command_reads_with_the_token_and_fails_cleanly_without(
    server: QueryServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "sinks.commands" not in cli.COMMANDS:  # until the lead's CLI lists it
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "sinks.commands"))
    monkeypatch.setenv("SWITCHBOARD_QUERY_TOKEN_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("SWITCHBOARD_QUERY_TOKEN", TOKEN)
    assert cli.main(["report", "--query-url", server.url, "--only", "recent_calls"]) == 0
    assert "c1" in capsys.readouterr().out

    monkeypatch.setenv("SWITCHBOARD_QUERY_TOKEN", "wrong-token-wrong-token")
    assert cli.main(["report", "--query-url", server.url, "--only", "recent_calls"]) == 1
    err = capsys.readouterr().err
    assert "401" in err and "Traceback" not in err

    monkeypatch.delenv("SWITCHBOARD_QUERY_TOKEN")
    monkeypatch.setattr(credentials, "DEFAULT_RUN_DIR", tmp_path)  # no token that `switchboard up` generated
    assert cli.main(["report", "--query-url", server.url]) == 1
    err = capsys.readouterr().err
    assert "SWITCHBOARD_QUERY_TOKEN" in err and "Traceback" not in err


def test_report_finds_the_running_sinks_endpoint_for_its_chdb_path_by_itself(
    server: QueryServer, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(credentials, "DEFAULT_RUN_DIR", tmp_path)
    port = int(server.url.rsplit(":", 1)[1])
    settings = SinkSettings(clickhouse_dsn=store.dsn, clickhouse_database=store.database, query_port=port,
                            query_token=SecretStr(TOKEN))
    reader = open_reader(settings)
    assert isinstance(reader, HttpReader)
    assert "c1" in run_reports(reader, ["recent_calls"])
    # with a wrong token the endpoint does not answer the ping: the report falls back to opening the path (which,
    # from another process than the sink's, chDB refuses with a clear message)
    wrong = open_reader(settings.model_copy(update={"query_token": SecretStr("wrong-token-wrong-token")}))
    try:
        assert not isinstance(wrong, HttpReader)
    finally:
        wrong.close()
