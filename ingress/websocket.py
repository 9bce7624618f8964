"""The socket half every channel shares: reads bounded in size and in silence, sends that survive a hang-up."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import WebSocket
from starlette.websockets import WebSocketState

from ingress.protocol import ProtocolError, close_reason

logger = logging.getLogger(__name__)


class CallerWebSocket:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def send_text(self, text: str) -> None:
        if self.ws.client_state is WebSocketState.CONNECTED:
            try:
                await self.ws.send_text(text)
            except Exception:  # the caller went away mid-send; the read loop ends the call
                logger.debug("send on a closing socket")

    async def close(self, code: int, reason: str) -> None:
        if self.ws.client_state is WebSocketState.CONNECTED:
            try:
                await self.ws.close(code, close_reason(reason))
            except Exception:
                logger.debug("close on a closed socket")


class Inbox:
    """A caller's messages, one at a time: ``None`` once the caller hung up.

    Raises ProtocolError for a message over ``max_bytes`` (1009) and when no caller audio has
    arrived for ``media_timeout_s`` (1008), counted from the connect and from each ``media()``:
    a socket that sends nothing, or only chatter, never holds an admission slot for long.
    """

    def __init__(self, ws: WebSocket, max_bytes: int, media_timeout_s: float) -> None:
        self.ws = ws
        self.max_bytes = max_bytes
        self.media_timeout_s = media_timeout_s
        self.last_media = time.monotonic()

    def media(self) -> None:
        """The call is alive: caller audio arrived (or, see CallSession, agent audio is playing)."""
        self.last_media = time.monotonic()

    async def next(self) -> str | bytes | None:
        while True:
            left = self.last_media + self.media_timeout_s - time.monotonic()
            if left <= 0:
                raise ProtocolError(1008, f"no media for {self.media_timeout_s:g} s", "media_timeout")
            try:
                async with asyncio.timeout(left):
                    msg = await self.ws.receive()
            except TimeoutError:
                continue  # last_media may have moved meanwhile (agent audio): re-check
            if msg["type"] == "websocket.disconnect":
                return None
            data: str | bytes = msg.get("text") if msg.get("text") is not None else msg.get("bytes") or b""
            if len(data) > self.max_bytes:
                raise ProtocolError(1009, f"message of {len(data)} bytes exceeds {self.max_bytes}", "oversized")
            return data
