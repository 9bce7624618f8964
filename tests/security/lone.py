"""A lone ingress (the real app under uvicorn, in the test's event loop, on the real broker, no processors) with
authentication ON, and clients that get in the way real callers do: signed Twilio webhook and upgrade, an ACS JWT,
an API key and a session token. Strangers are the same clients without credentials."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from ingress.acs import serializer as acs
from ingress.app import create_app
from ingress.settings import IngressSettings
from switchboard import codec
from switchboard.broker import EmbeddedBroker, free_port
from switchboard.bus import consumer_options, create_topics, topic_name
from switchboard.credentials import ClientCredentials, StackCredentials
from switchboard.settings import ServiceSettings
from switchboard.topics import Topic
from switchboard.twilio_client import open_media_stream

MULAW_SILENCE_20MS = base64.b64encode(b"\xff" * 160).decode()
PCM_SILENCE_20MS_16K = base64.b64encode(bytes(640)).decode()


@dataclass
class Lone:
    app: FastAPI
    settings: IngressSettings
    creds: ClientCredentials
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


@asynccontextmanager
async def lone_ingress(broker: EmbeddedBroker, run_dir: Path, **overrides: Any) -> AsyncIterator[Lone]:
    """The ingress with generated credentials (as ``switchboard up`` makes them) and ``overrides`` of its settings."""
    stack_creds = StackCredentials.ensure(run_dir, environ={})
    secrets = {k.removeprefix("SWITCHBOARD_").lower(): v for k, v in stack_creds.ingress_env().items()}
    port = free_port()
    settings = IngressSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"s{uuid.uuid4().hex[:8]}.", port=port,
                               auth="on", **{**secrets, **overrides})
    await create_topics(settings)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on",
                                           ws_max_size=1 << 20, proxy_headers=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield Lone(app, settings, ClientCredentials.from_stack(stack_creds), port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def twilio_start(call_sid: str, params: dict[str, str]) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": f"MZ{call_sid}", "start": {
        "streamSid": f"MZ{call_sid}", "callSid": call_sid, "accountSid": "AC" + "0" * 32, "tracks": ["inbound"],
        "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


def twilio_media(payload: str = MULAW_SILENCE_20MS, chunk: int = 0) -> str:
    return json.dumps({"event": "media", "streamSid": "MZ", "media": {
        "track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20), "payload": payload}})


async def twilio_call(ing: Lone, call_sid: str | None = None) -> tuple[Any, str]:
    """A signed Twilio media stream that has sent its ``start``: (socket, call_sid)."""
    call_sid = call_sid or f"CA{uuid.uuid4().hex}"
    ws, params = await open_media_stream(ing.http, ing.creds, call_sid=call_sid)
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(twilio_start(call_sid, params))
    return ws, call_sid


async def acs_socket(ing: Lone, connection_id: str | None = None, headers: dict[str, str] | None = None,
                     sample_rate: int = 16_000, length: int | None = None) -> tuple[Any, str]:
    """An authenticated ACS media socket that has sent its AudioMetadata: (socket, call_id)."""
    connection_id = connection_id or f"acs-{uuid.uuid4()}"
    ws = await websockets.connect(f"{ing.ws}/acs/media", max_size=None, additional_headers={
        **ing.creds.acs_headers(), "x-ms-call-connection-id": connection_id, **(headers or {})})
    with contextlib.suppress(websockets.ConnectionClosed):  # a refused socket is closed already: see closed_with
        await ws.send(acs.metadata_message(f"sub-{uuid.uuid4()}", sample_rate=sample_rate, length=length))
    return ws, connection_id


async def json_session(ing: Lone, headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=ing.http, timeout=10) as client:
        res = await client.post("/api/v1/calls/start", headers={**ing.creds.api_headers(), **(headers or {})},
                                json={"agent_type": "clinic-receptionist", "caller_number": "+15550100"})
    assert res.status_code == 200, res.text
    return res.json()


async def json_call(ing: Lone, headers: dict[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """An authenticated JSON API call whose socket said session_started: (socket, session)."""
    session = await json_session(ing, headers)
    ws = await websockets.connect(session["websocket_url"], max_size=None, additional_headers=headers or {})
    assert json.loads(await ws.recv())["type"] == "session_started"
    return ws, session


async def closed_with(ws: Any, timeout_s: float = 5.0) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason (None: the TCP connection dropped, no close frame)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout_s)
    except websockets.ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")


async def all_records(settings: ServiceSettings, topic: Topic, call_id: str | None, settle_s: float = 0.5
                      ) -> list[Any]:
    """Every record of one call (None: of every call) on a topic so far (waits ``settle_s`` for produces in flight
    first)."""
    await asyncio.sleep(settle_s)
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings))
    await consumer.start()
    try:
        name = topic_name(settings, topic)
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        found: list[Any] = []
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                found += [codec.decode(topic.record, m.value) for m in msgs
                          if call_id is None or m.key == call_id.encode()]
        return found
    finally:
        await consumer.stop()
