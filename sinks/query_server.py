"""Read-only SQL over HTTP, served by the sink that owns an embedded chDB.

chDB locks its directory to one process, so while the sink runs nobody else
can open it. ``switchboard report`` (and curl) read through this endpoint
instead; every query runs with ``readonly=2`` (no writes, no DDL). Loopback by
default. ``POST /query`` (body: SQL, ``?format=`` any ClickHouse output format,
JSONCompact by default) answers the raw output; ``GET /ping`` says who we are.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from sinks import metrics as sink_metrics
from sinks.store import Store

logger = logging.getLogger(__name__)
MAX_BODY = 1 << 20
READONLY = {"readonly": 2, "output_format_json_quote_64bit_integers": 0}


class QueryServer:
    def __init__(self, store: Store, host: str, port: int) -> None:
        self.store = store.reader()
        handler = type("Handler", (_Handler,), {"store": self.store})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="query-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> QueryServer:
        self.thread.start()
        logger.info("query endpoint listening", extra={"fields": {"url": self.url}})
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.store.close()


class _Handler(BaseHTTPRequestHandler):
    store: Store
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("query endpoint: " + format, *args)

    def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/ping":
            info = {"ok": True, "dsn": self.store.dsn, "database": self.store.database}
            self._reply(200, json.dumps(info).encode())
        elif url.path == "/query" and (sql := parse_qs(url.query).get("sql")):
            self._query(sql[0], url.query)
        else:
            self._reply(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if url.path != "/query" or not 0 < length <= MAX_BODY:
            self._reply(400, b'{"error": "POST /query with an SQL body"}')
            return
        self._query(self.rfile.read(length).decode("utf-8", "replace"), url.query)

    def _query(self, sql: str, query: str) -> None:
        fmt = parse_qs(query).get("format", ["JSONCompact"])[0]
        try:
            body = self.store.raw(sql, fmt=fmt, settings=READONLY)
        except Exception as exc:
            sink_metrics.QUERIES.labels("error").inc()
            self._reply(400, json.dumps({"error": str(exc)[:2000]}).encode())
            return
        sink_metrics.QUERIES.labels("ok").inc()
        self._reply(200, body, "application/json" if fmt.startswith("JSON") else "text/plain; charset=utf-8")
