"""Fixtures of the channel tests: a lone ingress in this process (for bad input), and the whole stack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from ingress.app import create_app
from ingress.settings import IngressSettings
from switchboard.broker import EmbeddedBroker, free_port
from switchboard.bus import create_topics
from switchboard.credentials import ClientCredentials, StackCredentials
from switchboard.stack import Stack
from tests.pipeline import running_stack

SPINE = ("ingress", "turns", "stt", "agent", "tts")


@dataclass
class LoneIngress:
    """The real ingress app served by uvicorn in the test's event loop, on the real broker, without processors,
    with authentication on: ``creds`` gets in (its API key may choose engines)."""

    app: FastAPI
    settings: IngressSettings
    port: int
    creds: ClientCredentials

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def credentials(run_dir: Path) -> tuple[dict[str, str], ClientCredentials]:
    """Fresh credentials as `switchboard up` makes them: the ingress's settings, and what its clients present."""
    generated = StackCredentials.ensure(run_dir, environ={})
    env = generated.ingress_env()
    fields = {name.removeprefix("SWITCHBOARD_").lower(): value for name, value in env.items()}
    return fields, ClientCredentials.from_stack(generated)


@pytest.fixture(scope="module")
async def lone_ingress(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LoneIngress]:
    port = free_port()
    auth, creds = credentials(tmp_path_factory.mktemp("lone-ingress"))
    settings = IngressSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"c{uuid.uuid4().hex[:8]}.",
                               port=port, max_message_bytes=16_384, **auth)
    await create_topics(settings)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    yield LoneIngress(app, settings, port, creds)
    server.should_exit = True
    await asyncio.wait_for(task, 15)


@pytest.fixture(scope="module")  # its processes must not compete with later modules
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole pipeline (ingress, turns, STT, agent, TTS) as subprocesses on the session broker."""
    with running_stack(broker, tmp_path_factory.mktemp("channels-stack"), only=SPINE) as s:
        yield s


@pytest.fixture(scope="session")
def channels_output(output_dir: Path) -> Path:
    out = output_dir / "channels"
    out.mkdir(exist_ok=True)
    return out
