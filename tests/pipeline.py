"""Helpers for tests that run the real pipeline (separate processes on the real broker)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import websockets

from switchboard.broker import EmbeddedBroker
from switchboard.credentials import ClientCredentials
from switchboard.stack import Stack, local_stack
from switchboard.twilio_client import open_media_stream


@contextmanager
def running_stack(broker: EmbeddedBroker, tmp_dir, only: tuple[str, ...] = (), scale: dict[str, int] | None = None,
                  **env: str) -> Iterator[Stack]:
    """The stack's credentials are generated in ``tmp_dir``; clients take ``stack.client_credentials``."""
    with local_stack(broker, tmp_dir, only, env, scale=scale) as stack:
        yield stack


def metric(url: str, name: str, creds: ClientCredentials | None = None, **labels: str) -> float:
    """One sample of a Prometheus metric at ``url`` (0 if absent); the ingress's /metrics wants ``creds``."""
    request = urllib.request.Request(url, headers=creds.metrics_headers() if creds else {})
    with urllib.request.urlopen(request, timeout=2) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            return float(m.group(2))
    return 0.0


async def twilio_stream(stack: Stack, call_sid: str) -> tuple[websockets.ClientConnection, dict[str, str]]:
    """A media stream opened as Twilio opens it (signed webhook, its TwiML, signed upgrade) on the stack's ingress."""
    return await open_media_stream(stack.http_base, stack.client_credentials, call_sid=call_sid)


def with_parameters(message: str, params: dict[str, str]) -> str:
    """A test's own ``start`` message carrying the TwiML's customParameters (the stream token); others unchanged."""
    try:
        msg: Any = json.loads(message)
    except ValueError:
        return message
    if not isinstance(msg, dict) or msg.get("event") != "start" or not isinstance(msg.get("start"), dict):
        return message
    msg["start"]["customParameters"] = {**params, **(msg["start"].get("customParameters") or {})}
    return json.dumps(msg)
