"""A local OpenAI-compatible chat-completions server (real HTTP, server-sent events) for tests and the benchmark.

It stands in for the cloud only: the real ``openai`` client talks to it over
loopback. Each request takes the next scripted behaviour (or the default):
stream text, stream a tool call, answer an HTTP error, or hang.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Say:
    """Stream ``pieces`` of text, ``first_delay`` s before the first and ``delay`` s between pieces."""

    pieces: list[str]
    first_delay: float = 0.0
    delay: float = 0.0
    usage: tuple[int, int] = (42, 7)


@dataclass
class CallTool:
    name: str
    arguments: dict[str, Any]
    first_delay: float = 0.0


@dataclass
class Fail:
    status: int
    message: str = "scripted failure"


@dataclass
class Hang:
    """Accept the request, send headers, then never send a token."""

    headers_first: bool = True


Behaviour = Say | CallTool | Fail | Hang


@dataclass
class Seen:
    body: dict[str, Any]
    started: float
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    first_byte: float | None = None
    disconnected: bool = False
    completed: bool = False


@dataclass
class OpenAIServer:
    default: Behaviour = field(default_factory=lambda: Say(["Hello there. ", "How can I help?"]))
    script: deque[Behaviour] = field(default_factory=deque)
    requests: list[Seen] = field(default_factory=list)
    url: str = ""
    root: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> OpenAIServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._completions)  # Azure OpenAI
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.root = f"http://127.0.0.1:{port}"
        self.url = f"{self.root}/v1"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def then(self, *behaviours: Behaviour) -> None:
        self.script.extend(behaviours)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(await request.json(), time.perf_counter(), path=request.path_qs, headers=dict(request.headers))
        self.requests.append(seen)
        b = self.script.popleft() if self.script else self.default
        if isinstance(b, Fail):
            return web.json_response({"error": {"message": b.message, "type": "scripted", "code": str(b.status)}},
                                     status=b.status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            if isinstance(b, Hang):
                if b.headers_first:
                    await resp.prepare(request)
                await asyncio.sleep(3600)
            await resp.prepare(request)
            if isinstance(b, Say):
                await self._say(resp, seen, b)
            else:
                await self._tool(resp, seen, b)
            await resp.write(b"data: [DONE]\n\n")
            seen.completed = True
        except (ConnectionError, asyncio.CancelledError):
            seen.disconnected = True
            raise
        return resp

    async def _event(self, resp: web.StreamResponse, seen: Seen, delta: dict[str, Any] | None,
                     finish: str | None = None, usage: tuple[int, int] | None = None) -> None:
        chunk: dict[str, Any] = {"id": "chatcmpl-local", "object": "chat.completion.chunk", "created": 0,
                                 "model": "local", "choices": []}
        if delta is not None:
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        if usage is not None:
            chunk["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                              "total_tokens": sum(usage)}
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if seen.first_byte is None:
            seen.first_byte = time.perf_counter()

    async def _say(self, resp: web.StreamResponse, seen: Seen, b: Say) -> None:
        for i, piece in enumerate(b.pieces):
            await asyncio.sleep(b.first_delay if i == 0 else b.delay)
            await self._event(resp, seen, {"role": "assistant", "content": piece} if i == 0 else {"content": piece})
        await self._event(resp, seen, {}, finish="stop")
        await self._event(resp, seen, None, usage=b.usage)

    async def _tool(self, resp: web.StreamResponse, seen: Seen, b: CallTool) -> None:
        await asyncio.sleep(b.first_delay)
        args = json.dumps(b.arguments)
        half = len(args) // 2
        await self._event(resp, seen, {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": b.name, "arguments": args[:half]}}]})
        await self._event(resp, seen, {"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]})
        await self._event(resp, seen, {}, finish="tool_calls")
        await self._event(resp, seen, None, usage=(30, 12))
