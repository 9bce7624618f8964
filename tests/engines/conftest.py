"""Fixtures for the engine tests: a local OpenAI-compatible server and an agent processor wired by configuration."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from processors.agent.logic import AgentProcessor
from processors.agent.main import create_engine
from processors.agent.settings import AgentSettings
from processors.agent.state import MemoryStore
from tests.engines.openai_server import OpenAIServer


@pytest.fixture
async def llm() -> AsyncIterator[OpenAIServer]:
    server = await OpenAIServer().start()
    yield server
    await server.stop()


@pytest.fixture
def agent_settings(llm: OpenAIServer) -> Callable[..., AgentSettings]:
    """Settings of an agent on the local server; short deadlines keep the failure tests fast."""

    def make(**overrides: Any) -> AgentSettings:
        values: dict[str, Any] = dict(agent_engine="openai", llm_base_url=llm.url, llm_api_key="sk-test-not-a-secret",
                                      llm_first_sentence_s=1.0, llm_next_sentence_s=1.0, llm_retries=1,
                                      llm_breaker_failures=2, llm_breaker_reset_s=1.0)
        values.update(overrides)
        return AgentSettings(**values)

    return make


@pytest.fixture
def make_agent(agent_settings: Callable[..., AgentSettings]) -> Callable[..., AgentProcessor]:
    def make(**overrides: Any) -> AgentProcessor:
        return AgentProcessor(create_engine(agent_settings(**overrides)), MemoryStore())

    return make


@pytest.fixture(scope="session")
def moonshine():  # the real offline recogniser: the default, and the Azure STT fallback
    from processors.stt.moonshine import MoonshineEngine
    from processors.stt.moonshine_convert import convert, model_dir

    convert(model_dir())  # a no-op after scripts/setup.sh; converts here only if set-up was skipped
    return MoonshineEngine()


@pytest.fixture(scope="session")
def whisper():  # the real selectable offline recogniser
    from processors.stt.whisper import WhisperEngine

    return WhisperEngine()


@pytest.fixture(scope="session")
def piper():  # the real offline voice (the Azure TTS fallback)
    from processors.tts.piper import PiperEngine

    return PiperEngine()


@pytest.fixture
def unreachable_speech_endpoint() -> str:
    """A loopback port with nothing listening: connections are refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"wss://127.0.0.1:{port}/speech"
