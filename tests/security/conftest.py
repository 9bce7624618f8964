"""Fixtures of the authentication tests: the real ingress app (uvicorn, this event loop, the real broker) with the
credentials `switchboard up` would generate, and a few ways to present them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import REGISTRY

from ingress.app import create_app
from ingress.auth import Authenticator
from ingress.settings import IngressSettings
from switchboard.broker import EmbeddedBroker, free_port
from switchboard.bus import create_topics
from switchboard.credentials import ClientCredentials, StackCredentials


@dataclass
class Ingress:
    app: FastAPI
    settings: IngressSettings
    port: int
    creds: ClientCredentials  # what `switchboard up`'s clients present
    generated: StackCredentials

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def auth(self) -> Authenticator:
        return self.app.state.auth


def refusals(entry: str, reason: str) -> float:
    """``switchboard_auth_refused_total{entry,reason}`` of this process (the ingress runs in it)."""
    return REGISTRY.get_sample_value("switchboard_auth_refused_total", {"entry": entry, "reason": reason}) or 0.0


def generated_credentials(run_dir: Path) -> tuple[dict[str, Any], StackCredentials]:
    generated = StackCredentials.ensure(run_dir, environ={})
    fields = {name.removeprefix("SWITCHBOARD_").lower(): value for name, value in generated.ingress_env().items()}
    return fields, generated


ServeIngress = Callable[..., AbstractAsyncContextManager[Ingress]]


@pytest.fixture(scope="module")
def serve_ingress(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> ServeIngress:
    """``async with serve_ingress(**settings) as ing``: a lone ingress with generated credentials; keyword settings
    override them (e.g. ``auth="off"``, ``public_url=...``)."""

    @asynccontextmanager
    async def serve(**overrides: Any) -> AsyncIterator[Ingress]:
        port = free_port()
        fields, generated = generated_credentials(tmp_path_factory.mktemp("run"))
        settings = IngressSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"a{uuid.uuid4().hex[:8]}.",
                                   port=port, **{**fields, **overrides})
        await create_topics(settings)
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        try:
            yield Ingress(app, settings, port, ClientCredentials.from_stack(generated), generated)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)

    return serve


@pytest.fixture(scope="module")
async def ingress(serve_ingress: ServeIngress) -> AsyncIterator[Ingress]:
    """One ingress per test module, authentication on, nothing but the generated credentials configured."""
    async with serve_ingress() as ing:
        yield ing
