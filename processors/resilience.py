"""Never dead air: timeouts, retries, a circuit breaker per engine, and a journal of what happened.

- ``EngineGuard`` wraps one engine: an ``aiobreaker`` circuit breaker (opens after
  ``fail_max`` failed calls in a row, lets one trial call through after
  ``reset_s``), the engine's timeouts, and ``tenacity`` retries with jittered
  exponential backoff for the steps that are safe to repeat (nothing was said or
  heard yet).
- ``pumped`` runs a producer coroutine in its own task and yields what it emits,
  so a consumer can stop it at once (barge-in) and the producer's network I/O
  never hops between tasks.
- ``Journal`` collects per-call notes (usage, fallbacks) that engines cannot
  yield through their text/audio interfaces; the processors drain it into records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiobreaker import CircuitBreaker, CircuitBreakerListener, CircuitBreakerState
from prometheus_client import Counter, Gauge
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from switchboard import metrics

logger = logging.getLogger(__name__)
T = TypeVar("T")

BREAKER_OPEN = Gauge("switchboard_engine_breaker_open", "1 while an engine's circuit breaker is open",
                     ["stage", "engine"])
FALLBACKS = Counter("switchboard_engine_fallbacks_total", "calls switched to another engine mid-call",
                    ["stage", "from_engine", "to_engine"])


class EngineTimeout(TimeoutError):
    """An engine did not answer within its budget."""


@dataclass(frozen=True, slots=True)
class Fallback:
    stage: str
    from_engine: str
    to_engine: str
    reason: str


@dataclass(frozen=True, slots=True)
class Usage:
    stage: str
    engine: str
    turn_seq: int | None = None
    llm_tokens_in: int = 0
    llm_tokens_out: int = 0
    stt_audio_seconds: float = 0.0
    tts_characters: int = 0


Note = Fallback | Usage


class Journal:
    """Per-call notes an engine leaves for its processor to publish."""

    def __init__(self) -> None:
        self._notes: dict[str, list[Note]] = defaultdict(list)

    def add(self, call_id: str, note: Note) -> None:
        self._notes[call_id].append(note)

    def drain(self, call_id: str) -> list[Note]:
        return self._notes.pop(call_id, [])


class _Metrics(CircuitBreakerListener):
    def __init__(self, stage: str, engine: str) -> None:
        self.stage, self.engine = stage, engine

    def state_change(self, breaker: CircuitBreaker, old: Any, new: Any) -> None:
        is_open = new.state is CircuitBreakerState.OPEN
        BREAKER_OPEN.labels(self.stage, self.engine).set(1 if is_open else 0)
        logger.warning("circuit breaker %s", new.state.name.lower(),
                       extra={"fields": {"stage": self.stage, "engine": self.engine}})

    def failure(self, breaker: CircuitBreaker, exception: BaseException) -> None:
        metrics.ENGINE_ERRORS.labels(self.stage, self.engine).inc()
        logger.warning("engine failed: %s", describe(exception),
                       extra={"fields": {"stage": self.stage, "engine": self.engine}})


def describe(exc: BaseException) -> str:
    """A short reason for logs and fallback events (never the request, never credentials)."""
    while exc.__cause__ is not None and type(exc).__name__ == "CircuitBreakerError":
        exc = exc.__cause__
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return f"{name} {status}" if status else name


class EngineGuard:
    """One engine's breaker, timeouts and retry policy."""

    def __init__(self, stage: str, engine: str, *, timeout_s: float, fail_max: int = 3, reset_s: float = 30.0,
                 retries: int = 1, backoff_s: float = 0.05,
                 transient: Callable[[BaseException], bool] = lambda exc: False) -> None:
        self.stage, self.engine = stage, engine
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.transient = transient
        self.breaker = CircuitBreaker(fail_max=fail_max, timeout_duration=timedelta(seconds=reset_s),
                                      listeners=[_Metrics(stage, engine)], name=f"{stage}:{engine}")

    @property
    def available(self) -> bool:
        """False while the breaker is open and its reset time has not come (then a trial call may pass)."""
        if self.breaker.current_state is not CircuitBreakerState.OPEN:
            return True
        opened = self.breaker._state_storage.opened_at  # stored by aiobreaker with utcnow()
        return opened is None or datetime.utcnow() >= opened + self.breaker.timeout_duration

    @property
    def state(self) -> str:
        return self.breaker.current_state.name.lower()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn`` through the breaker; a failure (or a timeout inside ``fn``) counts against the engine."""
        return await self.breaker.call_async(fn, *args)

    async def retrying(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` with retries on transient errors, all within ``timeout_s``."""
        async with asyncio.timeout(self.timeout_s):
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(1 + self.retries),
                wait=wait_exponential_jitter(multiplier=self.backoff_s, max=self.backoff_s * 8,
                                             jitter=self.backoff_s),
                retry=retry_if_exception(self.transient),
                reraise=True,
            ):
                with attempt:
                    return await fn()
        raise AssertionError("unreachable")  # pragma: no cover


async def with_deadlines(source: AsyncIterator[T], first_s: float, idle_s: float) -> AsyncIterator[T]:
    """Items of ``source``; ``EngineTimeout`` if the first takes over ``first_s`` or a later one over ``idle_s``."""
    limit = first_s
    try:
        while True:
            try:
                item = await asyncio.wait_for(anext(source), limit)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise EngineTimeout(f"no output within {limit:.2f} s") from exc
            yield item
            limit = idle_s
    finally:
        with contextlib.suppress(Exception):
            await source.aclose()  # type: ignore[attr-defined]


_END = object()


async def pumped(produce: Callable[[Callable[[T], None]], Awaitable[None]],
                 stop: asyncio.Event | None = None) -> AsyncIterator[T]:
    """Run ``produce(emit)`` as a task and yield what it emits, as it emits it.

    The producer's exception is re-raised here. When ``stop`` is set, or the
    consumer closes this generator, the producer task is cancelled at once.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def run() -> None:
        try:
            await produce(queue.put_nowait)
        except Exception as exc:
            queue.put_nowait(_Raised(exc))
        else:
            queue.put_nowait(_END)

    task = asyncio.create_task(run())
    stopper = asyncio.create_task(stop.wait()) if stop is not None else None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            waits = {getter} if stopper is None else {getter, stopper}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return
            item = getter.result()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        for t in (task, stopper):
            if t is not None and not t.done():
                t.cancel()
        await asyncio.gather(task, *([stopper] if stopper else []), return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _Raised:
    exc: Exception


def guarded_stream(guard: EngineGuard, source: Callable[[], AsyncIterator[T]], first_s: float,
            next_s: float) -> AsyncIterator[T]:
    """A primary engine's stream through its breaker, with deadlines on the first and each next
    item, yielded as it comes. Any failure (breaker open, deadline, error) is raised to the caller,
    which switches to its fallback."""

    async def produce(emit: Callable[[T], None]) -> None:
        async def drain() -> None:
            async for item in with_deadlines(source(), first_s, next_s):
                emit(item)

        await guard.call(drain)

    return pumped(produce)
