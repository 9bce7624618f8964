"""Records in flight inside a worker (switchboard/inflight.py), without Kafka: per-call order,
concurrency across calls, the commit watermark, commit floors, pause/resume thresholds and a
rebalance in the middle of the work."""

from __future__ import annotations

import asyncio
import random

import pytest

from switchboard.inflight import InFlight, PartitionOffsets, in_time_order

P0, P1 = ("audio.in", 0), ("audio.in", 1)


def work(log: list, name, delay: float = 0.0, acks: list | None = None):
    async def run():
        log.append(("start", name))
        await asyncio.sleep(delay)
        log.append(("end", name))
        return acks or []

    return run


def gate(log: list, name, release: asyncio.Event):
    async def run():
        log.append(("start", name))
        await release.wait()
        log.append(("end", name))
        return []

    return run


async def settle(flight: InFlight, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while flight.count:
            await flight.wait(0.05)


def test_the_watermark_is_the_lowest_offset_not_done_even_with_gaps() -> None:
    offsets = PartitionOffsets()
    assert offsets.watermark() is None
    for o in (10, 11, 15, 16):  # 12-14 compacted away
        offsets.start(o)
    offsets.finish(11)
    offsets.finish(15)
    assert offsets.watermark() == 10
    offsets.finish(10)
    assert offsets.watermark() == 16
    offsets.finish(16)
    assert offsets.watermark() == 17 and offsets.pending == 0
    with pytest.raises(ValueError):
        offsets.start(12)


async def test_one_calls_records_run_in_order_and_different_calls_at_once() -> None:
    flight = InFlight(limit=100)
    log: list = []
    # call A's first record is slow; B's must not wait for it, A's second must
    flight.submit(P0, 0, "A", work(log, "A0", 0.05))
    flight.submit(P0, 1, "B", work(log, "B1", 0.0))
    flight.submit(P0, 2, "A", work(log, "A2", 0.0))
    await settle(flight)
    assert log.index(("end", "B1")) < log.index(("end", "A0"))
    assert log.index(("end", "A0")) < log.index(("start", "A2"))


async def test_fifty_calls_with_random_handling_times_keep_each_calls_order() -> None:
    rng = random.Random(7)
    flight = InFlight(limit=10_000)
    seen: dict[str, list[int]] = {}
    running = 0
    most = 0

    def handler(call: str, n: int):
        async def run():
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(rng.random() * 0.005)
            seen.setdefault(call, []).append(n)
            running -= 1
            return []

        return run

    last: dict = {}
    for n in range(20):
        for c in range(50):
            tp = ("t", c % 4)
            last[tp] = last.get(tp, -1) + 1
            flight.submit(tp, last[tp], f"call{c}", handler(f"call{c}", n))
    await settle(flight, 10)
    assert seen == {f"call{c}": list(range(20)) for c in range(50)}
    assert most > 10, "different calls ran concurrently"
    assert flight.commit_offsets() == {tp: o + 1 for tp, o in last.items()}


async def test_out_of_order_completion_commits_only_below_the_first_record_not_done() -> None:
    flight = InFlight(limit=100)
    log: list = []
    slow = asyncio.Event()
    flight.submit(P0, 0, "A", gate(log, "A0", slow))
    flight.submit(P0, 1, "B", work(log, "B1"))
    flight.submit(P0, 2, "C", work(log, "C2"))
    await asyncio.sleep(0.01)
    assert flight.count == 1
    assert flight.commit_offsets() == {P0: 0}, "offset 0 is not done: 1 and 2 must wait"
    slow.set()
    await settle(flight)
    assert flight.commit_offsets() == {P0: 3}


async def test_a_record_is_done_only_when_its_outputs_are_acknowledged() -> None:
    flight = InFlight(limit=100)
    ack = asyncio.get_running_loop().create_future()
    flight.submit(P0, 0, "A", work([], "A0", acks=[ack]))
    later: list = []
    flight.submit(P0, 1, "A", work(later, "A1"))
    await asyncio.sleep(0.01)
    assert ("end", "A1") in later, "the call's next record did not wait for the broker"
    assert flight.count == 1 and flight.commit_offsets() == {P0: 0}
    ack.set_result(None)
    await settle(flight)
    assert flight.commit_offsets() == {P0: 2}


async def test_an_output_that_is_not_acknowledged_is_fatal_and_never_committed() -> None:
    flight = InFlight(limit=100)
    ack = asyncio.get_running_loop().create_future()
    flight.submit(P0, 0, "A", work([], "A0", acks=[ack]))
    await asyncio.sleep(0)
    ack.set_exception(ConnectionError("broker gone"))
    await flight.wait(1)
    assert isinstance(flight.error, ConnectionError)
    assert flight.commit_offsets() == {P0: 0}


async def test_the_commit_floor_holds_the_offset_and_a_commit_never_goes_back() -> None:
    flight = InFlight(limit=100)
    for o in range(5):
        flight.submit(P0, o, "A", work([], o))
    await settle(flight)
    assert flight.commit_offsets(lambda tp: 2) == {P0: 2}, "an open turn starting at 2 must be replayed"
    flight.committed({P0: 2})
    assert flight.commit_offsets(lambda tp: 2) == {}, "nothing new to commit"
    assert flight.commit_offsets(lambda tp: 1) == {}, "never behind what was committed"
    assert flight.commit_offsets(lambda tp: None) == {P0: 5}


async def test_saturation_and_relief_follow_the_limit_and_the_low_water_mark() -> None:
    flight = InFlight(limit=4)
    assert flight.low_water == 2
    release = {n: asyncio.Event() for n in range(4)}
    for n in range(4):
        flight.submit(P0, n, f"call{n}", gate([], n, release[n]))
    assert flight.saturated and flight.room == 0
    await asyncio.sleep(0)
    release[0].set()
    await flight.wait(1)
    assert not flight.saturated and not flight.relieved, "3 in flight: between the marks"
    release[1].set()
    await flight.wait(1)
    assert flight.relieved and flight.room == 2
    for e in release.values():
        e.set()
    await settle(flight)


async def test_a_rebalance_drops_queued_records_finishes_running_ones_and_commits_only_done_work() -> None:
    flight = InFlight(limit=100)
    log: list = []
    flight.submit(P0, 0, "A", work(log, "A0", 0.02))  # running: finishes within the wait
    flight.submit(P0, 1, "A", work(log, "A1"))  # queued behind it: dropped, replayed by the new owner
    flight.submit(P1, 0, "B", work(log, "B0"))  # another partition: untouched
    await asyncio.sleep(0)
    dropped, abandoned = await flight.drain([P0], timeout_s=1)
    assert (dropped, abandoned) == (1, 0)
    assert ("end", "A0") in log and ("start", "A1") not in log
    assert flight.commit_offsets() == {P0: 1, P1: 1}
    flight.forget([P0])
    assert flight.count == 0
    assert flight.commit_offsets() == {P1: 1}


async def test_a_record_that_does_not_finish_in_time_is_abandoned_and_replayed_not_committed() -> None:
    flight = InFlight(limit=100)
    log: list = []
    stuck = asyncio.Event()
    flight.submit(P0, 0, "A", work(log, "A0"))
    flight.submit(P0, 1, "A", gate(log, "A1", stuck))
    # the same call's record on a partition that stays (another input topic) runs after the abandoned one
    flight.submit(("calls", 1), 7, "A", work(log, "A-calls"))
    await asyncio.sleep(0.01)
    dropped, abandoned = await flight.drain([P0], timeout_s=0.05)
    assert (dropped, abandoned) == (0, 1)
    assert flight.commit_offsets()[P0] == 1, "the abandoned record is replayed by the new owner"
    await settle(flight)
    assert ("end", "A-calls") in log and ("end", "A1") not in log
    assert flight.commit_offsets()[("calls", 1)] == 8


async def test_close_lets_running_records_finish() -> None:
    flight = InFlight(limit=100)
    log: list = []
    for n in range(3):
        flight.submit(P0, n, f"call{n}", work(log, n, 0.01))
    await asyncio.sleep(0)
    assert await flight.close(1) == (0, 0)
    assert flight.count == 0 and flight.commit_offsets() == {P0: 3}


async def test_a_consumer_that_goes_back_starts_the_count_afresh_and_never_commits_backwards() -> None:
    flight = InFlight(limit=100)
    for o in range(10, 13):
        flight.submit(P0, o, "A", work([], o))
    await settle(flight)
    flight.committed(flight.commit_offsets())
    flight.submit(P0, 5, "A", work([], "replay"))  # an offset reset replays from 5
    await settle(flight)
    assert flight.commit_offsets() == {}, "6 is behind the committed 13"


# -- one fetch, handed over in time order -------------------------------------------------------------------


def test_a_fetch_is_handed_over_in_record_time_across_partitions() -> None:
    # one call on two topics: its end of turn (t=100) was produced before STT's final (t=110), but the fetch
    # lists the transcripts partition first
    batch = {("transcripts", 3): [("final", 110)], ("turn_events", 3): [("early", 40), ("end", 100)]}
    order = [r[0] for _, r in in_time_order(batch, lambda r: r[1])]
    assert order == ["early", "end", "final"]


def test_a_partitions_own_order_is_kept_even_when_its_times_go_back() -> None:
    # two producers' clocks on one partition: the log order wins, the other partition fits around it
    batch = {"p0": [("a", 50), ("b", 30), ("c", 60)], "p1": [("x", 40), ("y", 55)]}
    order = [r[0] for _, r in in_time_order(batch, lambda r: r[1])]
    assert [o for o in order if o in "abc"] == ["a", "b", "c"]
    assert [o for o in order if o in "xy"] == ["x", "y"]
    assert order == ["x", "a", "b", "y", "c"]


def test_records_of_the_same_time_keep_the_fetchs_order_and_each_names_its_partition() -> None:
    batch = {"p1": [("p1-0", 7), ("p1-1", 7)], "p0": [("p0-0", 7)], "p2": []}
    assert list(in_time_order(batch, lambda r: r[1])) == [("p1", ("p1-0", 7)), ("p1", ("p1-1", 7)),
                                                          ("p0", ("p0-0", 7))]
    assert list(in_time_order({}, lambda r: r[1])) == []
