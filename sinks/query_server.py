"""The named report queries over HTTP, served by the sink that owns an embedded chDB.

chDB locks its directory to one process, so while the sink runs nobody else can
open it; ``switchboard report`` reads through this endpoint instead. It runs
only the queries shipped in ``sinks/sql/reports/`` and ``sinks/sql/queries/``,
by name. No request carries SQL: there is no body, no query string, no
parameter, so nothing a caller sends reaches ClickHouse.

    GET /ping             who we are (the DSN, so the report can tell it is the right database)
    GET /reports          the names and titles of the queries
    GET /reports/{name}   that query's rows, JSONCompact

Every request needs ``Authorization: Bearer <SWITCHBOARD_QUERY_TOKEN>`` (compared
in constant time). Only GET is served: any other method is 405, so a web page
cannot reach it with a form or ``text/plain`` POST, which browsers send
cross-origin without asking first; a request with an ``Origin`` header (a
browser's) is refused, and no CORS header is ever sent.

In depth, the connection the queries run on is locked to ``readonly=1`` before
the first one: chDB then refuses DDL, writes, changing settings (``readonly``
included) and the table functions that reach outside the database (``file``,
``url``, ``remote``, ``executable``, ``INSERT INTO FUNCTION``). What it does not
stop, in chDB 4.4, is the *scalar* function ``file('/path')``, which reads any
file the process can: that is why no SQL from a request is ever run.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from sinks import metrics as sink_metrics
from sinks.report import named_queries, titles
from sinks.store import Store

logger = logging.getLogger(__name__)
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# per query, on top of the connection's readonly=1 (which refuses changing most other settings)
QUERY_SETTINGS = {"output_format_json_quote_64bit_integers": 0}


class QueryServer:
    def __init__(self, store: Store, host: str, port: int, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the query endpoint needs a token of at least 16 characters (SWITCHBOARD_QUERY_TOKEN)")
        self.store = store.reader()
        lock_down(self.store)
        handler = type("Handler", (_Handler,), {
            "store": self.store, "token": token.encode(), "queries": named_queries(), "titles": titles(),
        })
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="query-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> QueryServer:
        self.thread.start()
        logger.info("report endpoint listening", extra={"fields": {"url": self.url}})
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.store.close()


def lock_down(store: Store) -> None:
    """Make the connection read-only for good: chDB keeps ``readonly`` on the connection, and at 1
    it can no longer be lowered (see the module's docstring for what that refuses)."""
    value = store.raw("SELECT getSetting('readonly')", fmt="TSV", settings={"readonly": 1}).strip()
    if value != b"1":
        raise RuntimeError(f"the report connection is not read-only (readonly={value!r})")


class _Handler(BaseHTTPRequestHandler):
    store: Store
    token: bytes
    queries: dict[str, str]
    titles: dict[str, str]
    protocol_version = "HTTP/1.1"
    server_version = "switchboard-sink"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are counted in switchboard_sink_queries_total; the path and method go to debug below

    def _reply(self, status: int, payload: Any, outcome: str, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sink_metrics.QUERIES.labels(outcome).inc()
        logger.debug("report endpoint", extra={"fields": {
            "method": self.command, "path": urlsplit(self.path).path[:200], "status": status}})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status >= 400:
            # a refused request's body (if any) is never read: the connection cannot be reused
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse_method(self) -> None:
        self._reply(405, {"error": "only GET: the endpoint runs named reports, it takes no SQL"}, "refused",
                    {"Allow": "GET"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = _refuse_method

    def _authorised(self) -> bool:
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)

    def do_GET(self) -> None:
        if self.headers.get("Content-Length", "0") != "0" or self.headers.get("Transfer-Encoding"):
            self._reply(400, {"error": "a request carries no body"}, "refused")
            return
        if self.headers.get("Origin") is not None:
            self._reply(403, {"error": "browser requests are refused (no CORS)"}, "refused")
            return
        if not self._authorised():
            self._reply(401, {"error": "Authorization: Bearer <SWITCHBOARD_QUERY_TOKEN> required"}, "unauthorized",
                        {"WWW-Authenticate": 'Bearer realm="switchboard-reports"'})
            return
        url = urlsplit(self.path)
        if url.query or url.fragment:
            self._reply(400, {"error": "reports take no parameters"}, "refused")
            return
        if url.path == "/ping":
            self._reply(200, {"ok": True, "dsn": self.store.dsn, "database": self.store.database}, "ok")
        elif url.path == "/reports":
            self._reply(200, {"reports": [{"name": n, "title": self.titles.get(n, n)} for n in self.queries]}, "ok")
        elif url.path.startswith("/reports/"):
            self._report(url.path.removeprefix("/reports/"))
        else:
            self._reply(404, {"error": "not found: GET /reports or /reports/{name}"}, "not_found")

    def _report(self, name: str) -> None:
        sql = self.queries.get(name) if NAME.match(name) else None
        if sql is None:
            self._reply(404, {"error": "no such report; GET /reports lists them"}, "not_found")
            return
        try:
            body = self.store.raw(sql, fmt="JSONCompact", settings=QUERY_SETTINGS)
        except Exception as exc:
            logger.warning("report failed", extra={"fields": {"report": name, "error": str(exc)[:500]}})
            self._reply(500, {"error": f"report {name} failed"}, "error")
            return
        self._reply(200, body, "ok")
