"""Limits on what one caller, or one stranger, can make this node do.

- per source (client IP): call starts per minute and open call sockets at once,
  enforced by ``EdgeLimits`` (ASGI middleware) before any handler or credential
  check runs, so a flood costs the node almost nothing;
- per HTTP request: the body size (413);
- per call: caller audio at most ``max_audio_speed`` × real time (``AudioBudget``),
  and counted events such as DTMF digits and ``end_speech`` (``TokenBucket``).

The source is the TCP peer's address. ``X-Forwarded-For`` is believed only when
the peer is a configured trusted proxy; then the source is the right-most address
in the header that is not itself a trusted proxy (the left part is the client's
to forge).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from switchboard import metrics

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CALL_SOCKETS = ("/twilio/media", "/acs/media", "/ws/call/")
CALL_STARTS_HTTP = ("/api/v1/calls/start",)


def networks(spec: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` → networks; a bad entry fails at start-up, not per request."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _within(text: str, nets: tuple[Network, ...]) -> bool:
    addr = _address(text)
    return addr is not None and any(addr in net for net in nets)


def client_source(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The address a request comes from, for per-source limits (see the module docstring)."""
    if not forwarded_for or not _within(peer, trusted):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if _address(hop) is None:
            return peer  # a forged or garbled header: count the proxy, which is at least real
        if not _within(hop, trusted):
            return hop
    return peer


def channel_of(path: str) -> str:
    if path.startswith("/twilio"):
        return "twilio"
    if path.startswith("/acs"):
        return "acs"
    if path.startswith(("/api", "/ws")):
        return "jsonapi"
    return "http"


class TokenBucket:
    """``rate`` per second, at most ``burst`` at once. ``take(n)`` returns how many of ``n`` are allowed."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, n: float = 1.0) -> float:
        self._refill()
        granted = max(0.0, min(n, self.tokens))
        self.tokens -= granted
        return granted

    def full(self) -> bool:
        self._refill()
        return self.tokens >= self.burst


class AudioBudget:
    """Caller audio of one call: at most ``speed`` × the call's age, plus ``burst_s`` of slack. Counts in samples.

    The budget is measured against the wall time since the call started, not a bucket that refills
    only up to ``burst_s``: when this process stalls (a slow broker, a busy loop) the caller's real-time
    audio piles up in the socket and is read in a burst afterwards, and a bucket would drop that burst
    as "too fast" although the caller never sent faster than real time. Over the whole call the bus
    still never carries more than ``speed`` × its duration + ``burst_s`` of one caller's audio.
    """

    def __init__(self, sample_rate: int, speed: float, burst_s: float,
                 clock: Callable[[], float] = time.monotonic, started: float | None = None) -> None:
        self.rate = sample_rate * speed  # samples per second of call time
        self.burst = sample_rate * burst_s
        self.clock = clock
        self.started = clock() if started is None else started
        self.taken = 0

    def allow(self, samples: int) -> int:
        """How many of ``samples`` may be published now (whole samples)."""
        budget = int((self.clock() - self.started) * self.rate + self.burst) - self.taken
        granted = max(0, min(samples, budget))
        self.taken += granted
        return granted


@dataclass
class _Source:
    starts: TokenBucket
    open_sockets: int = 0


class SourceLimits:
    """Call starts per minute and open call sockets, per source. Memory is bounded by pruning idle sources."""

    MAX_TRACKED = 10_000

    def __init__(self, starts_per_minute: int, max_open: int, exempt: tuple[Network, ...] = ()) -> None:
        self.starts_per_minute = starts_per_minute
        self.max_open = max_open
        self.exempt = exempt
        self._sources: dict[str, _Source] = {}

    def _get(self, source: str) -> _Source:
        entry = self._sources.get(source)
        if entry is None:
            if len(self._sources) >= self.MAX_TRACKED:
                self._prune()
            entry = _Source(TokenBucket(self.starts_per_minute / 60.0, float(self.starts_per_minute)))
            self._sources[source] = entry
        return entry

    def _prune(self) -> None:
        for key in [k for k, s in self._sources.items() if s.open_sockets == 0 and s.starts.full()]:
            del self._sources[key]

    def start(self, source: str) -> str | None:
        """A new call from ``source``: None if allowed (and counted), else the refusal reason."""
        if _within(source, self.exempt):
            return None
        if self._get(source).starts.take(1.0) < 1.0:
            return "source_rate"
        return None

    def open(self, source: str) -> str | None:
        """A call socket from ``source`` opens: None if allowed (then ``close`` it), else the refusal reason."""
        if _within(source, self.exempt):
            return None
        entry = self._get(source)
        if entry.open_sockets >= self.max_open:
            return "source_concurrency"
        entry.open_sockets += 1
        return None

    def close(self, source: str) -> None:
        if _within(source, self.exempt):
            return
        entry = self._sources.get(source)
        if entry is not None and entry.open_sockets > 0:
            entry.open_sockets -= 1

    def open_sockets(self, source: str) -> int:
        entry = self._sources.get(source)
        return entry.open_sockets if entry else 0


REFUSALS = {
    "source_rate": "too many new calls from this address, try again later",
    "source_concurrency": "too many open calls from this address",
}


class EdgeLimits:
    """ASGI middleware: per-source call limits on call sockets and call starts, and the HTTP body cap."""

    def __init__(self, app: ASGIApp, *, limits: SourceLimits, trusted_proxies: tuple[Network, ...],
                 max_body_bytes: int) -> None:
        self.app = app
        self.limits = limits
        self.trusted = trusted_proxies
        self.max_body_bytes = max_body_bytes

    def source(self, scope: Scope) -> str:
        peer = (scope.get("client") or ("unknown", 0))[0]
        forwarded = None
        if self.trusted:
            values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
            forwarded = ",".join(values) or None
        return client_source(peer, forwarded, self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "websocket" and path.startswith(CALL_SOCKETS):
            await self._call_socket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _call_socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = self.source(scope)
        refusal = self.limits.start(source) or self.limits.open(source)
        if refusal is not None:
            await self._refuse_socket(scope, receive, send, refusal)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.close(source)

    async def _refuse_socket(self, scope: Scope, receive: Receive, send: Send, refusal: str) -> None:
        """Accept, then close with 1013 and the reason: a websocket client sees why (a bare 403 says nothing)."""
        metrics.BAD_INPUT.labels(channel_of(scope["path"]), refusal).inc()
        logger.warning("call refused", extra={"fields": {"reason": refusal}})
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1013, "reason": REFUSALS[refusal]})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        channel = channel_of(path)
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._too_large(send, channel)
            return
        if scope.get("method") == "POST" and path in CALL_STARTS_HTTP:
            refusal = self.limits.start(self.source(scope))
            if refusal is not None:
                metrics.BAD_INPUT.labels(channel, refusal).inc()
                await _json_response(send, 429, REFUSALS[refusal], [(b"retry-after", b"60")])
                return
        received = 0
        answered = False  # by us (413) or by the app: one response only

        async def capped_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes and not answered:
                    # a chunked body without Content-Length that outgrew the cap: answer now, and tell the app
                    # the client is gone (an exception here would become the framework's 400)
                    answered = True
                    await self._too_large(send, channel)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                if answered:
                    return
                answered = True
            elif answered and received > self.max_body_bytes:
                return  # the app's answer to a body we already refused
            await send(message)

        await self.app(scope, capped_receive, guarded_send)

    async def _too_large(self, send: Send, channel: str) -> None:
        metrics.BAD_INPUT.labels(channel, "body_too_large").inc()
        await _json_response(send, 413, f"request body over {self.max_body_bytes} bytes")


async def _json_response(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
