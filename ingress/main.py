"""Run the ingress: ``switchboard ingress`` (or ``python -m ingress.main``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys

import uvicorn

from ingress.app import create_app
from ingress.runtime import IngressRuntime
from ingress.settings import IngressSettings
from switchboard import logs, metrics, tracing
from switchboard.settings import load_settings


class _DrainingServer(uvicorn.Server):
    """On SIGTERM: report not-ready, let calls finish (bounded), then shut down. On a port shared with other
    ingress processes (``release_port``) it also stops listening at once, so the kernel hands every new call to
    the others instead of to a node that would refuse it ("draining") for as long as its calls last."""

    def __init__(self, config: uvicorn.Config, runtime: IngressRuntime, release_port: bool = False) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.release_port = release_port
        self._drain: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.runtime.ready:
            metrics.INGRESS_READY.set(1)

    def handle_exit(self, sig: int, frame: object) -> None:
        metrics.INGRESS_READY.set(0)
        if self._drain is None and not self.runtime.draining:
            if self.release_port:  # open calls keep their sockets; only the listening one closes
                for server in getattr(self, "servers", []):
                    server.close()

            async def drain_then_exit() -> None:
                await self.runtime.drain()
                self.should_exit = True

            self._drain = asyncio.get_event_loop().create_task(drain_then_exit())
        else:
            super().handle_exit(sig, frame)  # a second signal: stop now


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening address several ingress processes of this host bind at once (SO_REUSEPORT): the kernel hands
    each new connection to one of them. Linux lets only processes of the same user join, so another user's
    program cannot take a share of the calls."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchboard ingress", description="Run the ingress: websockets in, agent audio out."
    )
    parser.parse_args(argv)
    settings = load_settings(IngressSettings, "switchboard ingress")  # a mistyped setting: exit 2, no traceback
    logs.setup("ingress", settings.log_level)
    tracing.setup("ingress", settings)  # OpenTelemetry spans of each turn, when an OTLP endpoint is set
    try:
        app = create_app(settings)
    except ValueError as exc:  # e.g. a short API key or an unreadable JWKS file (ingress/auth.py)
        logging.getLogger(__name__).error("ingress cannot start", extra={"fields": {"reason": str(exc)}})
        print(f"switchboard ingress: {exc}", file=sys.stderr)
        return 2
    # the scrape port: internal (cluster network or loopback), no token
    metrics.serve(settings.metrics_port, settings.metrics_host, "ingress")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws_max_size=max(settings.max_message_bytes * 4, 1 << 20),
        lifespan="on",
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default; SWITCHBOARD_TRUSTED_PROXIES decides instead
        proxy_headers=False,
    )
    sockets = None
    if settings.reuse_port:
        try:
            sockets = [shared_socket(settings.host, settings.port)]
        except OSError as exc:  # e.g. another user's process, or one without SO_REUSEPORT, holds the port
            reason = f"cannot share {settings.host}:{settings.port}: {exc.strerror or exc}"
            logging.getLogger(__name__).error("ingress cannot start", extra={"fields": {"reason": reason}})
            print(f"switchboard ingress: {reason}", file=sys.stderr)
            return 2
    _DrainingServer(config, app.state.runtime, release_port=settings.reuse_port).run(sockets=sockets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
