"""The inference pool: model calls run off the event loop, in a bounded pool sized to the cores.

Engines call ``await run_inference(fn, *args)`` instead of ``asyncio.to_thread``. The
difference: ``asyncio.to_thread`` uses the loop's default executor (``min(32, cpus + 4)``
threads, shared with DNS look-ups and file I/O), so twenty calls decoding at once oversubscribe
two cores and every decode gets slower. Here one ``ThreadPoolExecutor`` per process, sized to
the cores (``SWITCHBOARD_INFERENCE_THREADS``, 0 = ``os.cpu_count()``), runs at most that many
model calls; the rest wait in its queue, visible as ``switchboard_inference_queued``.
onnxruntime (Silero, Smart Turn, Moonshine, Piper) and CTranslate2 (faster-whisper) release
the GIL while they compute, so the threads really run in parallel with the loop.

A caller that is cancelled while its job is still queued (a call hung up, a reply was barged
into) takes the job out of the queue: that work is never done. A job already running cannot be
interrupted; it finishes and its result is dropped.

``configure(threads)`` is called once at start-up by the runner (``serve``); an engine used
without it (a test, a script) gets a pool of ``os.cpu_count()`` threads on first use.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from switchboard import metrics

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads = 0


def default_threads() -> int:
    return os.cpu_count() or 1


def configure(threads: int) -> None:
    """Size the pool to ``threads`` model calls at once (0 or less: one per core).

    Replaces an existing pool of another size; jobs already submitted to the old one finish there.
    """
    global _pool, _threads
    size = threads if threads > 0 else default_threads()
    with _lock:
        if _pool is not None and _threads == size:
            return
        old, _pool, _threads = _pool, ThreadPoolExecutor(size, thread_name_prefix="inference"), size
    metrics.INFERENCE_THREADS.set(size)
    if old is not None:
        old.shutdown(wait=False)


def threads() -> int:
    """The pool's size (configuring the default pool if nothing did yet)."""
    _executor()
    return _threads


def _executor() -> ThreadPoolExecutor:
    if _pool is None:
        configure(0)
    assert _pool is not None
    return _pool


class _Job:
    """One model call and where it is: queued, running (or done), or dropped before it ran."""

    __slots__ = ("call", "lock", "state")

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call
        self.lock = threading.Lock()
        self.state = "queued"

    def run(self) -> object:
        # On a pool thread: the job leaves the queue and holds a thread until it returns.
        with self.lock:
            if self.state == "dropped":
                return None
            self.state = "running"
        metrics.INFERENCE_QUEUED.dec()
        metrics.INFERENCE_BUSY.inc()
        try:
            return self.call()
        finally:
            metrics.INFERENCE_BUSY.dec()

    def drop(self) -> bool:
        """Drop the job if it has not started; True when it will never run."""
        with self.lock:
            if self.state != "queued":
                return False
            self.state = "dropped"
        metrics.INFERENCE_QUEUED.dec()
        metrics.INFERENCE_DROPPED.inc()
        return True


async def run_inference(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run the blocking model call ``fn(*args, **kwargs)`` on the inference pool and await its result.

    Use it for every CPU-bound engine call (a decode, a synthesis, a VAD or end-of-turn model
    pass over more than a few frames). The caller's context variables (the log correlation IDs)
    go with the call, as with ``asyncio.to_thread``. Exceptions raised by ``fn`` are raised here.
    Cancelling the awaiting task drops a job that has not started yet: it never runs.
    """
    ctx = contextvars.copy_context()
    job = _Job(functools.partial(ctx.run, fn, *args, **kwargs))
    metrics.INFERENCE_QUEUED.inc()
    future = _executor().submit(job.run)
    try:
        return await asyncio.wrap_future(future)  # type: ignore[return-value]
    except asyncio.CancelledError:
        if job.drop():
            future.cancel()  # frees its queue slot now rather than when a thread reaches it
        raise
