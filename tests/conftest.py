"""Session-wide fixtures: one real tansu broker on a free loopback port."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.broker import EmbeddedBroker
from switchboard.bus import create_topics
from switchboard.settings import ServiceSettings

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
OUTPUT_DIR = Path(__file__).resolve().parent / "output"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log").start()
    yield b
    b.stop()


@pytest.fixture
async def bus_settings(broker: EmbeddedBroker) -> ServiceSettings:
    """Settings on the session broker with a fresh topic prefix, so tests never share records."""
    settings = ServiceSettings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}.")
    await create_topics(settings)
    return settings


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR
