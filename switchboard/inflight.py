"""Records in flight inside one worker: one call's records in order, different calls at once,
a bounded number in flight, and the offsets that are safe to commit.

The runner hands every fetched record to ``InFlight.submit`` with its partition, offset and key
(the call ID). Records of one key run one after another in a *lane* (an asyncio task that lives
while the key has work); records of different keys run concurrently. A record is *done* when its
work has returned and every output it produced is acknowledged by the broker; only then does it
count towards the commit offset.

Offsets are tracked per partition as Confluent's Parallel Consumer does: the commit offset of a
partition is the lowest offset handed out and not yet done (or one past the highest, when all
are done), so a crash or a rebalance replays every record that was not finished and never skips
one. A processor's *commit floor* (the first record of a turn still open) can hold it lower.

Nothing here knows Kafka: partitions are any hashable value, work is any coroutine function
returning the delivery futures of its outputs. ``tests/spine/test_inflight.py`` specifies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

Work = Callable[[], Awaitable[Sequence[asyncio.Future[Any]]]]
P = TypeVar("P")
R = TypeVar("R")


def in_time_order(batch: Mapping[P, Sequence[R]], time_of: Callable[[R], int]) -> Iterator[tuple[P, R]]:
    """The records of one fetch, partitions merged by time: each partition's own order kept, ties in batch order.

    A fetch returns its records partition by partition, and a call's records sit in one partition of each topic
    it is on (co-partitioned by call ID). Handed over partition by partition, a call's records of two topics would
    reach its lane in topic order, not in the order they happened: the agent would see STT's final before the
    end of turn produced 10 ms earlier whenever one fetch returned both (README "Speculative reply"). Merging by
    record time puts them in the order they were produced, and a partition's records never pass each other: the
    merge only ever compares the partitions' next records.
    """
    runs = [[(p, r) for r in records] for p, records in batch.items()]
    if len(runs) == 1:
        return iter(runs[0])
    return heapq.merge(*runs, key=lambda pr: time_of(pr[1]))  # stable: a tie goes to the earlier partition


class PartitionOffsets:
    """Offsets of one partition in the order they were handed out, and which of them are done."""

    __slots__ = ("_done", "_next", "_order")

    def __init__(self) -> None:
        self._order: deque[int] = deque()  # handed out, not yet the done prefix
        self._done: set[int] = set()
        self._next: int | None = None  # one past the highest offset handed out

    def accepts(self, offset: int) -> bool:
        return self._next is None or offset >= self._next

    def start(self, offset: int) -> None:
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} handed out after {self._next - 1}: a partition's offsets only grow")
        self._order.append(offset)
        self._next = offset + 1

    def finish(self, offset: int) -> None:
        self._done.add(offset)
        # Offsets may have gaps (compaction, transaction markers): the order, not +1, says what is next.
        while self._order and self._order[0] in self._done:
            self._done.discard(self._order.popleft())

    @property
    def pending(self) -> int:
        return len(self._order)

    def watermark(self) -> int | None:
        """The offset to commit: every record below it is done. None before any record."""
        if self._order:
            return self._order[0]
        return self._next


class State(Enum):
    QUEUED = "queued"
    RUNNING = "running"  # its work runs, or it waits for its outputs' acknowledgements
    DONE = "done"
    DROPPED = "dropped"  # its partition was revoked before it ran
    ABANDONED = "abandoned"  # its partition was revoked and it did not finish in time


@dataclass(eq=False, slots=True)
class Item:
    tp: Hashable
    offset: int
    key: Hashable
    work: Work
    offsets: PartitionOffsets
    state: State = State.QUEUED


class InFlight:
    """Schedules records by key and keeps per-partition commit offsets.

    ``limit`` bounds the records handed out and not done (queued, running or awaiting acks); the
    runner pauses its partitions once ``saturated`` and resumes once ``relieved`` (at most
    ``low_water`` in flight; half the limit by default), instead of buffering without bound.
    """

    def __init__(self, limit: int, low_water: int | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.low_water = max(0, min(limit - 1, limit // 2 if low_water is None else low_water))
        self.count = 0
        self.error: BaseException | None = None  # an output that was not acknowledged: fatal
        self._offsets: dict[Hashable, PartitionOffsets] = {}
        self._committed: dict[Hashable, int] = {}
        self._lanes: dict[Hashable, deque[Item]] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._active: set[Item] = set()  # running or awaiting acks
        self._waiters: list[asyncio.Future[None]] = []
        self.busy = asyncio.Event()  # set while any record is in flight (the watcher reads only then)

    # ------------------------------------------------------------ scheduling

    @property
    def saturated(self) -> bool:
        return self.count >= self.limit

    @property
    def relieved(self) -> bool:
        return self.count <= self.low_water

    @property
    def room(self) -> int:
        """Records that may still be handed out before the limit."""
        return max(0, self.limit - self.count)

    def submit(self, tp: Hashable, offset: int, key: Hashable, work: Work) -> None:
        """Hand out one record: it runs after the earlier records of ``key``, concurrently with other keys."""
        offsets = self._offsets.get(tp)
        if offsets is None or not offsets.accepts(offset):
            if offsets is not None:  # the consumer went back (an offset reset): count afresh from here
                logger.warning("offsets went back", extra={"fields": {"partition": repr(tp), "offset": offset}})
            offsets = self._offsets[tp] = PartitionOffsets()
        offsets.start(offset)
        item = Item(tp, offset, key, work, offsets)
        self.count += 1
        self.busy.set()
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque()
        lane.append(item)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run_lane(key, lane), name=f"lane {key!r}")

    async def _run_lane(self, key: Hashable, lane: deque[Item]) -> None:
        try:
            while lane:
                item = lane[0]
                item.state = State.RUNNING
                self._active.add(item)
                try:
                    acks = await item.work()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the work dead-letters what its processor raises; this is the bus failing
                    self._fail(exc)
                    return
                lane.popleft()
                self._after_acks(item, acks)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
                if not lane and self._lanes.get(key) is lane:
                    del self._lanes[key]

    def _after_acks(self, item: Item, acks: Sequence[asyncio.Future[Any]]) -> None:
        # The lane moves on at once (the next record of the call need not wait for the broker);
        # the record counts as done only when its outputs are acknowledged. Produce order per
        # partition is kept by the producer, so nothing is reordered.
        if not acks:
            self._finish(item)
            return
        gathered = asyncio.gather(*acks)

        def acked(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                self._fail(asyncio.CancelledError("an output's delivery was cancelled"))
            elif fut.exception() is not None:
                self._fail(fut.exception())  # type: ignore[arg-type]
            else:
                self._finish(item)

        gathered.add_done_callback(acked)

    def _finish(self, item: Item) -> None:
        self._active.discard(item)
        if item.state is not State.RUNNING:
            return  # abandoned meanwhile: its partition is someone else's now
        item.state = State.DONE
        item.offsets.finish(item.offset)
        self.count -= 1
        self._notify()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._notify()

    def _notify(self) -> None:
        if self.count == 0:
            self.busy.clear()
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        """Sleep until some record finishes (or the bus fails), at most ``timeout_s``."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout_s)

    # -------------------------------------------------------------- offsets

    def commit_offsets(self, floor: Callable[[Hashable], int | None] = lambda tp: None) -> dict[Hashable, int]:
        """Offsets to commit now: per partition, the watermark held at the processor's floor, and
        only where it moved past what was committed (a commit never goes backwards)."""
        out: dict[Hashable, int] = {}
        for tp, offsets in self._offsets.items():
            mark = offsets.watermark()
            if mark is None:
                continue
            low = floor(tp)
            if low is not None and low < mark:
                mark = low
            if mark > self._committed.get(tp, -1):
                out[tp] = mark
        return out

    def committed(self, offsets: dict[Hashable, int]) -> None:
        """Record offsets the broker accepted."""
        for tp, offset in offsets.items():
            if tp in self._offsets:
                self._committed[tp] = max(offset, self._committed.get(tp, -1))

    # ------------------------------------------------------------ rebalance

    async def drain(self, tps: Iterable[Hashable], timeout_s: float) -> tuple[int, int]:
        """The partitions ``tps`` are being taken away: drop their records that have not started
        (the new owner replays them), give the running ones up to ``timeout_s`` to finish, then
        abandon the rest (cancelled; not done, so never committed). Returns (dropped, abandoned).
        Commit next, then ``forget`` them."""
        gone = set(tps)
        dropped = 0
        for lane in self._lanes.values():
            keep = [i for i in lane if i.tp not in gone or i.state is not State.QUEUED]
            for item in lane:
                if item.tp in gone and item.state is State.QUEUED:
                    item.state = State.DROPPED
                    self.count -= 1
                    dropped += 1
            lane.clear()
            lane.extend(keep)
        deadline = time.monotonic() + timeout_s
        while any(i.tp in gone for i in self._active):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self.wait(remaining)
        abandoned = 0
        for item in [i for i in self._active if i.tp in gone]:
            abandoned += 1
            await self._abandon(item)
        if abandoned or dropped:
            logger.info("records of revoked partitions", extra={"fields": {"dropped": dropped, "abandoned": abandoned}})
            self._notify()
        return dropped, abandoned

    async def _abandon(self, item: Item) -> None:
        self._active.discard(item)
        item.state = State.ABANDONED
        self.count -= 1
        lane = self._lanes.get(item.key)
        task = self._tasks.get(item.key)
        if lane and lane[0] is item and task is not None:
            # Still inside its work: stop the lane, take the item out, and restart the lane for
            # what is queued behind it (records of partitions that stay).
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            lane.popleft()
            if lane and item.key not in self._tasks:
                self._tasks[item.key] = asyncio.create_task(self._run_lane(item.key, lane), name=f"lane {item.key!r}")
            elif not lane and self._lanes.get(item.key) is lane:
                del self._lanes[item.key]
        # else: it only awaits acknowledgements; _finish will ignore it when they come

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Drop the offset bookkeeping of partitions no longer ours (after their last commit)."""
        for tp in tps:
            self._offsets.pop(tp, None)
            self._committed.pop(tp, None)

    async def close(self, timeout_s: float) -> tuple[int, int]:
        """Stop: drop what has not started, let running records finish (bounded), abandon the rest."""
        return await self.drain(list(self._offsets), timeout_s)
