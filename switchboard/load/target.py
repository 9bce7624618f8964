"""Where the load goes and how one media stream is opened.

Loopback by default: load is only ever aimed elsewhere on purpose (``--allow-remote``), and even
then stays bounded by the same caps. A stream is opened as Twilio opens it: the voice webhook,
its TwiML's stream URL, the websocket, the TwiML's ``<Parameter>``s echoed in ``start``; signed
with the stack's Twilio auth token unless ``SWITCHBOARD_AUTH=off``.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import websockets

from switchboard import twilio_client
from switchboard.credentials import ClientCredentials

MEDIA_PATH = "/twilio/media"
CONNECT_TIMEOUT_S = 10.0


class TargetError(ValueError):
    """The target cannot be used (bad URL, not loopback without --allow-remote, no credentials)."""


def is_loopback(host: str) -> bool:
    """Literal loopback addresses and ``localhost`` only: no DNS lookup decides where load goes."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Target:
    http_base: str  # e.g. http://127.0.0.1:8080
    media_url: str  # e.g. ws://127.0.0.1:8080/twilio/media
    host: str
    port: int
    credentials: ClientCredentials | None = None


def parse_target(url: str, *, allow_remote: bool = False) -> Target:
    """``http(s)://host:port`` (the ingress) or its ``ws(s)://host:port/twilio/media`` stream URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise TargetError(f"{url!r} is not an http(s):// or ws(s):// URL of the ingress")
    secure = parts.scheme in ("https", "wss")
    port = parts.port or (443 if secure else 80)
    if not allow_remote and not is_loopback(parts.hostname):
        raise TargetError(
            f"{parts.hostname} is not a loopback address: load goes to this machine only unless --allow-remote is given"
        )
    netloc = parts.netloc.rsplit("@", 1)[-1]
    http_base = f"{'https' if secure else 'http'}://{netloc}"
    media_url = f"{'wss' if secure else 'ws'}://{netloc}{MEDIA_PATH}"
    return Target(http_base, media_url, parts.hostname, port)


def with_credentials(target: Target, run_dir: Path | None) -> Target:
    """The client credentials of the stack (``switchboard up`` keeps them under ``.switchboard/``; all empty
    with ``SWITCHBOARD_AUTH=off``)."""
    try:
        creds = ClientCredentials.load(run_dir=run_dir)
    except Exception as exc:  # an unreadable credentials file: the user's setup, said plainly
        raise TargetError(f"cannot read the stack's credentials ({exc}); give --run-dir, or set "
                          "SWITCHBOARD_AUTH=off on both sides") from None
    return Target(target.http_base, target.media_url, target.host, target.port, creds)


def http_client() -> httpx.AsyncClient:
    """One HTTP client for every webhook of a run: a client costs ~25 ms of CPU to create (its TLS context),
    which at hundreds of calls would stall the generator's own event loop and delay every caller's frames."""
    return httpx.AsyncClient(timeout=CONNECT_TIMEOUT_S, limits=httpx.Limits(max_connections=50))


async def open_stream(
    target: Target, call_sid: str, caller_number: str, http: httpx.AsyncClient
) -> tuple[Any, dict[str, str]]:
    """What ``twilio_client.open_media_stream`` does (the signed voice webhook, its TwiML's stream URL and
    ``<Parameter>``s, the signed upgrade), with the run's shared HTTP client and no per-message compression
    (Twilio sends plain frames; deflating 50 messages a second per call would cost both sides CPU).
    Returns the socket and the ``customParameters`` for the ``start`` message."""
    creds = target.credentials
    token = creds.twilio_auth_token if creds is not None else ""
    url = f"{target.http_base}/twilio/voice"
    form = twilio_client.voice_form(call_sid, caller_number, "AC" + secrets.token_hex(16))
    headers = {twilio_client.SIGNATURE_HEADER: twilio_client.sign(token, url, form)} if token else {}
    res = await http.post(url, data=form, headers=headers)
    if res.status_code != 200:
        raise twilio_client.WebhookRefused(f"POST /twilio/voice answered {res.status_code}: {res.text[:100]}")
    stream_url, params = twilio_client.parse_twiml(res.text)
    ws_headers = {twilio_client.SIGNATURE_HEADER: twilio_client.sign(token, stream_url, {})} if token else {}
    # No client keepalive pings: a stalled ingress must be seen to drop a call itself, not have the generator
    # give up on it (the ingress pings its callers anyway).
    ws = await websockets.connect(stream_url, additional_headers=ws_headers, max_size=None, compression=None,
                                  open_timeout=CONNECT_TIMEOUT_S, ping_interval=None)
    return ws, {**params, "caller_number": params.get("caller_number", caller_number)}


def metrics_headers(target: Target) -> dict[str, str]:
    """The bearer token for the ingress's /metrics on the public port (empty with auth off)."""
    return target.credentials.metrics_headers() if target.credentials is not None else {}
