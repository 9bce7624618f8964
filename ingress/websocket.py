"""The socket half every channel's CallerSocket shares: sends that survive a caller hanging up."""

from __future__ import annotations

import logging

from fastapi import WebSocket
from starlette.websockets import WebSocketState

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
                await self.ws.close(code, reason)
            except Exception:
                logger.debug("close on a closed socket")
