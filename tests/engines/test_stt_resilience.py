"""The cloud recogniser's fallback, with stand-ins for the cloud and offline recognisers (no models, no network)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from processors.resilience import EngineGuard
from processors.stt.engine import SttResult
from processors.stt.fallback import ResilientStt


class Recogniser:
    """Stand-in recogniser: counts what it hears; the cloud one can fail as told."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failure: str | None = None
        self.opened = 0

    def open(self, language: str, sample_rate: int) -> Stream:
        self.opened += 1
        if self.failure == "refuse":
            raise ConnectionRefusedError("unreachable")
        return Stream(self)


class Stream:
    def __init__(self, owner: Recogniser) -> None:
        self.owner = owner
        self.samples = 0

    async def push(self, samples: np.ndarray) -> list[SttResult]:
        if self.owner.failure == "drop" and self.samples:
            raise ConnectionResetError("connection lost")
        self.samples += len(samples)
        return [SttResult("partial", False, self.samples // 16, "en-US")]

    async def early(self) -> SttResult:
        if self.owner.failure == "early":
            raise ConnectionResetError("connection lost")
        return SttResult(f"{self.owner.name} so far {self.samples}", False, self.samples // 16, "en-US")

    async def finish(self) -> SttResult:
        if self.owner.failure == "hang":
            await asyncio.sleep(3600)
        return SttResult(f"{self.owner.name} heard {self.samples}", True, self.samples // 16, "en-US")

    async def cancel(self) -> None:
        return None


@pytest.fixture
def stt() -> tuple[Recogniser, Recogniser, ResilientStt]:
    cloud, offline = Recogniser("azure"), Recogniser("whisper")
    guard = EngineGuard("stt", "azure", timeout_s=0.2, fail_max=2, reset_s=60)
    return cloud, offline, ResilientStt(cloud, offline, guard, final_s=0.2)


async def turn(engine: ResilientStt, chunks: int = 5) -> tuple[list[SttResult], SttResult]:
    stream = engine.open("en-US", 16000)
    partials: list[SttResult] = []
    for _ in range(chunks):
        partials += await stream.push(np.zeros(4000, dtype=np.int16))
    return partials, await stream.finish()


async def test_a_healthy_cloud_recogniser_gives_partials_and_the_final(stt):
    _, offline, engine = stt
    partials, final = await turn(engine)
    assert len(partials) == 5 and final.text == "azure heard 20000" and offline.opened == 0


@pytest.mark.parametrize("failure", ["refuse", "drop", "hang"])
async def test_a_failing_cloud_recogniser_has_the_whole_turn_replayed_offline(stt, failure):
    cloud, _, engine = stt
    cloud.failure = failure
    t0 = time.perf_counter()
    _, final = await turn(engine)
    assert final.text == "whisper heard 20000", "every sample of the turn, including those the cloud had"
    assert time.perf_counter() - t0 < 0.2 + 0.3


async def test_the_open_breaker_sends_new_turns_straight_offline(stt):
    cloud, _, engine = stt
    cloud.failure = "drop"
    await turn(engine)
    await turn(engine)
    assert engine.guard.state == "open"
    cloud.failure = None
    opened = cloud.opened
    _, final = await turn(engine)
    assert final.text.startswith("whisper") and cloud.opened == opened


async def test_the_cloud_recognisers_early_result_passes_through_at_a_pause(stt):
    _, offline, engine = stt
    stream = engine.open("en-US", 16000)
    await stream.push(np.zeros(4000, dtype=np.int16))
    early = await stream.early()
    assert early.text == "azure so far 4000" and not early.final and offline.opened == 0


async def test_an_early_result_that_fails_is_empty_and_the_final_falls_back_offline(stt):
    cloud, _, engine = stt
    stream = engine.open("en-US", 16000)
    await stream.push(np.zeros(4000, dtype=np.int16))
    cloud.failure = "early"
    early = await stream.early()
    assert early.text == "" and not early.final and early.audio_ms == 250
    assert (await stream.finish()).text == "whisper heard 4000"
