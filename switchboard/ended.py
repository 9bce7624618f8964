"""Calls that have ended, so a processor does no more work for them.

A caller who hangs up while their greeting or reply waits for the synthesiser (twenty calls
starting at once queue behind the inference pool) must not cost that synthesis. Processors that
produce speech read ``calls`` too (co-partitioned with their input, same key), learn of
``call_ended`` early through the runner's watcher, and skip or cut short the call's work.

The set is bounded (oldest forgotten first) and entries expire: a call ID is only needed while
records of the call may still arrive, which is minutes, not days.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")


class EndedCalls:
    def __init__(self, limit: int = 50_000, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.ttl_s = ttl_s
        self.clock = clock
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    def end(self, call_id: str) -> None:
        """Record that ``call_id`` ended; work waiting on it (``until_ended``) stops."""
        self._ended[call_id] = self.clock()
        self._ended.move_to_end(call_id)
        while len(self._ended) > self.limit:
            self._ended.popitem(last=False)
        for waiter in self._waiters.pop(call_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    def __contains__(self, call_id: object) -> bool:
        at = self._ended.get(call_id)  # type: ignore[call-overload]
        if at is None:
            return False
        if self.clock() - at > self.ttl_s:
            del self._ended[call_id]  # type: ignore[arg-type]
            return False
        return True

    def __len__(self) -> int:
        return len(self._ended)

    async def until_ended(self, call_id: str, source: AsyncIterator[T]) -> AsyncIterator[T]:
        """Items of ``source`` until the call ends. When it ends while the next item is being
        made, that step is cancelled (a model call still queued in the inference pool is dropped)."""
        step: asyncio.Future[T] | None = None
        try:
            while call_id not in self:
                step = asyncio.ensure_future(anext(source))
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(call_id, set()).add(waiter)
                try:
                    await asyncio.wait({step, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiters = self._waiters.get(call_id)
                    if waiters is not None:
                        waiters.discard(waiter)
                        if not waiters:
                            del self._waiters[call_id]
                    waiter.cancel()
                if not step.done():
                    return  # ended mid-step: the finally cancels the step
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if step is not None and not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
