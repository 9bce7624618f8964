"""Adaptive fetch waits: short while records flow, growing while fetches come back empty.

tansu does not answer a waiting fetch when a record arrives (DESIGN.md), so the fetch wait
bounds every hop's latency and a short wait (10 ms) keeps hops at a few milliseconds. But a
consumer with nothing to read then asks the broker a hundred times a second, and an idle stack
of a dozen consumers burns half a core doing it. So each consumer's wait adapts:

- while a record came within ``fetch_idle_after_ms`` (10 s): ``fetch_max_wait_ms`` (10 ms);
  a call in progress keeps every stage on its path inside that window (audio every 20 ms,
  turn events, transcripts, playback events);
- after that, each empty fetch doubles the wait, up to ``fetch_idle_wait_ms`` (1000 ms): an idle
  consumer asks once a second (the sink, off the voice path, every 5 s: ``sinks/sink.py``);
- the first record back resets it. That record (the first of a new call, after a quiet spell)
  pays for the long wait once per hop, but less than the wait: tansu re-reads its storage
  during a waiting fetch and answers when it finds the record (measured with
  ``bench/idle_cpu.py --latency``: p50 ~95 ms, max ~480 ms at 1000 ms; ~50 / ~140 ms at 500 ms, at which the
  idle stack took 13.5–15 % of a core against 8.6 % at 1000 ms).

Why not longer: the broker's cost of an empty fetch grows with the partitions it covers (the
sink reads all 13 topics × 32 partitions), so the idle stack's CPU falls with the cap (README).

A consumer whose owner knows better (the ingress's egress while it has calls) passes
``keep_short`` to hold the short wait.

aiokafka builds each fetch request from its fetcher's ``_fetch_max_wait_ms`` and has no public
setter, so ``attach`` wraps the fetcher's per-request coroutine to observe each response and set
the next request's wait. The policy itself (``FetchWait``) is plain and unit-tested.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from switchboard.settings import ServiceSettings

logger = logging.getLogger(__name__)


class FetchWait:
    """The fetch-wait policy of one consumer."""

    def __init__(
        self,
        short_ms: int,
        cap_ms: int,
        idle_after_ms: int,
        keep_short: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.short_ms = short_ms
        self.cap_ms = max(cap_ms, short_ms)
        self.idle_after_s = idle_after_ms / 1000
        self.keep_short = keep_short
        self.clock = clock
        self.wait_ms = short_ms
        self._last_record = clock()

    @classmethod
    def from_settings(cls, settings: ServiceSettings, keep_short: Callable[[], bool] | None = None) -> FetchWait:
        return cls(settings.fetch_max_wait_ms, settings.fetch_idle_wait_ms, settings.fetch_idle_after_ms, keep_short)

    def observe(self, got_records: bool) -> int:
        """Account for one fetch response; returns the wait of the next request."""
        now = self.clock()
        if got_records:
            self._last_record = now
        if got_records or (self.keep_short is not None and self.keep_short()):
            self.wait_ms = self.short_ms
        elif now - self._last_record >= self.idle_after_s:
            self.wait_ms = min(self.cap_ms, max(1, self.wait_ms) * 2)
        return self.wait_ms


def attach(consumer: Any, policy: FetchWait) -> FetchWait:
    """Make a started ``AIOKafkaConsumer``'s fetch wait follow ``policy``. Returns the policy."""
    fetcher = getattr(consumer, "_fetcher", None)
    proc = getattr(fetcher, "_proc_fetch_request", None)
    if fetcher is None or proc is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        # another aiokafka: keep the fixed short wait rather than fail
        logger.warning("adaptive fetch wait unavailable: this aiokafka's fetcher has no hook")
        return policy

    async def observed(*args: Any, **kwargs: Any) -> Any:
        got = await proc(*args, **kwargs)  # True when the response added records
        fetcher._fetch_max_wait_ms = policy.observe(bool(got))
        return got

    fetcher._proc_fetch_request = observed
    fetcher._fetch_max_wait_ms = policy.wait_ms
    return policy
