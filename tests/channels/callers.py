"""Simulated callers of the ACS and JSON API channels, speaking real speech in real time."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import websockets

from ingress.acs import serializer as acs
from switchboard.caller import BusObserver, CallResult
from switchboard.credentials import ClientCredentials
from switchboard.settings import ServiceSettings

FRAME_S = 0.02


class _Paced:
    """Sends 20 ms frames at real-time pace, keeping one clock across calls."""

    def __init__(self, rate: int, send_frame: Callable[[np.ndarray], Any]) -> None:
        self.rate = rate
        self.frame = rate // 50
        self.send_frame = send_frame
        self.clock = time.monotonic()

    async def play(self, samples: np.ndarray) -> None:
        for i in range(0, len(samples), self.frame):
            await asyncio.sleep(max(0.0, self.clock - time.monotonic()))
            chunk = samples[i : i + self.frame]
            await self.send_frame(np.pad(chunk, (0, self.frame - len(chunk))))
            self.clock += FRAME_S

    async def silence_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                return False
            await self.play(np.zeros(self.frame * 5, dtype=np.int16))
        return True


@dataclass
class AcsResult:
    call: CallResult
    payload_sizes: set[int] = field(default_factory=set)
    stop_audio_after_speech_s: list[float] = field(default_factory=list)
    speech_started: float | None = None


class AcsCaller:
    """Speaks ACS bidirectional media streaming: AudioMetadata, then AudioData every 20 ms."""

    def __init__(self, url: str, settings: ServiceSettings, sample_rate: int = 16_000,
                 credentials: ClientCredentials | None = None) -> None:
        self.url, self.settings, self.rate = url, settings, sample_rate
        self.credentials = credentials or ClientCredentials()
        self.connection_id = f"acs-{uuid.uuid4()}"
        self.result = AcsResult(CallResult(self.connection_id))
        self._reply: list[np.ndarray] = []
        self._last_audio = 0.0
        self._samples_heard = 0

    async def _receive(self, ws: Any) -> None:
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["kind"] == "AudioData":
                    pcm = base64.b64decode(msg["audioData"]["data"])
                    self.result.payload_sizes.add(len(pcm))
                    self._reply.append(np.frombuffer(pcm, dtype="<i2"))
                    self._last_audio = time.monotonic()
                    self._samples_heard += len(pcm) // 2
                elif msg["kind"] == "StopAudio":
                    self.result.call.clears += 1
                    if self.result.speech_started is not None:
                        self.result.stop_audio_after_speech_s.append(time.monotonic() - self.result.speech_started)
                    self._flush()
        except websockets.ConnectionClosed as exc:
            self.result.call.close_code = exc.rcvd.code if exc.rcvd else None

    def _flush(self) -> None:
        if self._reply:
            self.result.call.agent_audio.append(np.concatenate(self._reply))
            self._reply = []


    async def run(self, speech: np.ndarray, *, barge_in_after_s: float, timeout_s: float = 20.0) -> AcsResult:
        """Wait for the greeting, talk over it after ``barge_in_after_s``, then hear a second of the answer.

        ``speech`` is at this caller's rate."""
        observer = BusObserver(self.settings, self.connection_id, self.result.call)
        await observer.start()
        # ACS presents its JWT on the upgrade; a local key stands in for ACS's own
        headers = {"x-ms-call-connection-id": self.connection_id, **self.credentials.acs_headers()}
        try:
            async with websockets.connect(self.url, additional_headers=headers, max_size=None) as ws:
                receiver = asyncio.create_task(self._receive(ws))

                async def send(frame: np.ndarray) -> None:
                    silent = not frame.any()
                    await ws.send(acs.audio_message(frame.astype("<i2").tobytes(), time.strftime("%FT%TZ"),
                                                    "4:+15550100", silent=silent))

                await ws.send(acs.metadata_message(f"sub-{uuid.uuid4()}", sample_rate=self.rate))
                line = _Paced(self.rate, send)
                assert await line.silence_until(lambda: self._last_audio > 0, timeout_s), "no greeting"
                await line.play(np.zeros(int(self.rate * barge_in_after_s), dtype=np.int16))
                self.result.speech_started = time.monotonic()
                await line.play(speech)
                self._flush()
                heard_before = self._samples_heard  # then hang up after a second of the answer
                await line.silence_until(lambda: self._samples_heard - heard_before >= self.rate, timeout_s)
                self._flush()
                await asyncio.sleep(0.5)  # the latency record of the answer
                await ws.close()
                await asyncio.wait_for(receiver, 5)
        finally:
            await observer.stop()
        return self.result


@dataclass
class JsonApiResult:
    session: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def agent_audio_after(self, index: int) -> np.ndarray:
        chunks = [np.frombuffer(base64.b64decode(m["data"]), dtype="<i2")
                  for m in self.messages[index:] if m["type"] == "agent_audio"]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


class JsonApiCaller:
    """Starts a call with ``POST /api/v1/calls/start`` and talks over ``WS /ws/call/{session_id}``."""

    def __init__(self, base_url: str, sample_rate: int = 16_000, credentials: ClientCredentials | None = None) -> None:
        self.base_url, self.rate = base_url, sample_rate
        self.credentials = credentials or ClientCredentials()

    def _answer_heard(self, result: JsonApiResult, since: int) -> bool:
        """The answer's latency has come, and a second of its audio after it."""
        later = result.messages[since:]
        at = next((i for i, m in enumerate(later) if m["type"] == "latency"), None)
        return at is not None and len(result.agent_audio_after(since + at)) >= self.rate

    async def run(self, speech: np.ndarray, timeout_s: float = 20.0) -> JsonApiResult:
        """Wait out the greeting, speak, send ``end_speech`` and nothing more; hang up a second into the answer."""
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            res = await client.post("/api/v1/calls/start", headers=self.credentials.api_headers(), json={
                "agent_type": "clinic-receptionist", "caller_number": "+15550123", "language": "en-US",
                "sample_rate": self.rate})
            res.raise_for_status()
        result = JsonApiResult(res.json())
        ws_url = result.session["websocket_url"]  # it carries the session's token
        async with websockets.connect(ws_url, max_size=None) as ws:

            async def receive() -> None:
                async for raw in ws:  # ends when the server closes the socket
                    result.messages.append(json.loads(raw))

            receiver = asyncio.create_task(receive())

            async def send(frame: np.ndarray) -> None:
                await ws.send(json.dumps({"type": "audio_chunk", "data": base64.b64encode(frame.astype("<i2")
                                          .tobytes()).decode(), "timestamp": time.time()}))

            line = _Paced(self.rate, send)
            assert await line.silence_until(lambda: bool(result.of("reply_end")), timeout_s), "no greeting"
            await line.play(speech)
            spoken = len(result.messages)
            await ws.send(json.dumps({"type": "end_speech"}))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not self._answer_heard(result, spoken):
                await asyncio.sleep(0.05)
            await ws.send(json.dumps({"type": "hangup"}))
            await asyncio.wait_for(receiver, 5)
            result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
        return result
