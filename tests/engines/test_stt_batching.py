"""Turns that end together are decoded as one batch (processors/stt/batching.py), without a model: a stand-in
``decode_batch`` records the batches it is given and can hold the inference thread to make turns queue up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from processors.stt.batching import BatchDecoder
from switchboard import inference


class Recorder:
    """Decodes a turn to the text of its first sample; holds the first batch until ``release`` while ``hold``."""

    def __init__(self, hold: bool = False, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Event()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        self.fail = fail

    def __call__(self, audios: list[np.ndarray]) -> list[str]:
        self.batches.append([int(a[0]) for a in audios])
        self.started.set()
        self.released.wait(10)
        if self.fail:
            raise RuntimeError("the engine broke")
        return [f"turn {int(a[0])}" for a in audios]


def turn(n: int) -> np.ndarray:
    return np.full(1600, n, dtype=np.int16)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One inference thread, so a batch in progress makes every later turn wait in the queue."""
    before = inference.threads()
    inference.configure(1)
    yield
    inference.configure(before)


async def hold_the_thread(decoder: BatchDecoder, engine: Recorder) -> asyncio.Task[str]:
    first = asyncio.create_task(decoder(turn(0)))
    assert await asyncio.to_thread(engine.started.wait, 10)
    return first


async def test_a_lone_turn_is_decoded_at_once_on_its_own(one_thread):
    engine = Recorder()
    decoder = BatchDecoder(engine, max_batch=8, engine="test")
    assert await decoder(turn(7)) == "turn 7"
    assert engine.batches == [[7]]


async def five_behind_a_busy_thread(max_batch: int) -> tuple[Recorder, list[str]]:
    """Turn 0 holds the only thread while turns 1–5 end; then it is let go. The texts of turns 0–5, in order."""
    engine = Recorder(hold=True)
    decoder = BatchDecoder(engine, max_batch=max_batch, engine="test")
    first = await hold_the_thread(decoder, engine)
    waiting = [asyncio.create_task(decoder(turn(n))) for n in range(1, 6)]
    await asyncio.sleep(0.05)
    engine.released.set()
    return engine, list(await asyncio.gather(first, *waiting))


async def test_turns_ending_while_the_thread_is_busy_are_decoded_together_each_getting_its_own_text(one_thread):
    engine, texts = await five_behind_a_busy_thread(max_batch=8)
    assert texts == [f"turn {n}" for n in range(6)]
    assert engine.batches == [[0], [1, 2, 3, 4, 5]]  # oldest first, one pass for the five


async def test_a_batch_holds_at_most_max_batch_turns(one_thread):
    engine, _ = await five_behind_a_busy_thread(max_batch=2)
    assert engine.batches == [[0], [1, 2], [3, 4], [5]]


async def test_a_turn_cancelled_while_it_waits_is_never_decoded(one_thread):
    engine = Recorder(hold=True)
    decoder = BatchDecoder(engine, max_batch=8, engine="test")
    first = await hold_the_thread(decoder, engine)
    hung_up = asyncio.create_task(decoder(turn(1)))
    kept = asyncio.create_task(decoder(turn(2)))
    await asyncio.sleep(0.05)
    hung_up.cancel()
    await asyncio.sleep(0.05)
    engine.released.set()
    assert await kept == "turn 2"
    await first
    with pytest.raises(asyncio.CancelledError):
        await hung_up
    assert engine.batches == [[0], [2]]


async def test_an_engine_failure_reaches_every_turn_of_its_batch_and_the_next_turn_decodes(one_thread):
    engine = Recorder(hold=True, fail=True)
    decoder = BatchDecoder(engine, max_batch=8, engine="test")
    first = await hold_the_thread(decoder, engine)
    waiting = [asyncio.create_task(decoder(turn(n))) for n in (1, 2)]
    await asyncio.sleep(0.05)
    engine.released.set()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert [str(r) for r in results] == ["the engine broke"] * 3
    engine.fail = False
    assert await decoder(turn(3)) == "turn 3"


async def test_a_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        BatchDecoder(Recorder(), max_batch=0, engine="test")
