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

    The timeout is one loop timer per call that re-arms itself when it finds the deadline moved, not an
    ``asyncio.timeout`` around every read: that scheduled and cancelled a timer per 20 ms message, ~4 % of the
    ingress's CPU at 100 silent callers (py-spy, README "Load testing").
    """

    def __init__(self, ws: WebSocket, max_bytes: int, media_timeout_s: float) -> None:
        self.ws = ws
        self.max_bytes = max_bytes
        self.media_timeout_s = media_timeout_s
        self.last_media = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None  # the handler's task, the one reader of this socket
        self._reader: asyncio.Task[object] | None = None  # that task while it waits in next()
        self._expired = False

    def media(self) -> None:
        """The call is alive: caller audio arrived (or, see CallSession, agent audio is playing)."""
        self.last_media = time.monotonic()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _left(self) -> float:
        return self.last_media + self.media_timeout_s - time.monotonic()

    def _check(self) -> None:
        left = self._left()
        if left > 0:  # media came meanwhile: sleep until the new deadline
            self._timer = asyncio.get_running_loop().call_later(left, self._check)
            return
        self._timer = None
        self._expired = True
        if self._reader is not None:
            self._reader.cancel()

    def _timed_out(self) -> ProtocolError:
        return ProtocolError(1008, f"no media for {self.media_timeout_s:g} s", "media_timeout")

    async def next(self) -> str | bytes | None:
        if self._left() <= 0:
            raise self._timed_out()
        self._expired = False  # the timer may have fired between two reads, before media() moved the deadline
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._left(), self._check)
        if self._task is None:
            self._task = asyncio.current_task()
        reader = self._reader = self._task
        try:
            msg = await self.ws.receive()
        except asyncio.CancelledError:
            # our own cancel (the deadline passed) becomes the 1008; anyone else's (shutdown) goes on
            if self._expired and reader is not None and reader.uncancel() == 0:
                raise self._timed_out() from None
            raise
        finally:
            self._reader = None
        if msg["type"] == "websocket.disconnect":
            return None
        data: str | bytes = msg.get("text") if msg.get("text") is not None else msg.get("bytes") or b""
        if len(data) > self.max_bytes:
            raise ProtocolError(1009, f"message of {len(data)} bytes exceeds {self.max_bytes}", "oversized")
        return data
