"""Concurrent turns decoded as one batch, for an engine that decodes several turns at once faster than one by one.

Moonshine's decoder steps are bound by reading its weights, not by arithmetic: eight turns decoded together cost
about what three cost one after another. So when turns end together (a burst of callers), their final decodes should
share the passes. ``BatchDecoder`` does that with no waiting window: every decode request goes into one queue and
puts one job on the inference pool; the first job to reach a free thread takes everything queued by then (up to
``max_batch``), and jobs that find the queue empty return at once. A lone turn is therefore decoded as soon as a
thread is free, exactly as before, and turns that arrive while the threads are busy are decoded together.

A caller cancelled while its request is still queued (the call hung up) takes it out: it is never decoded. A
request already in a running batch is decoded with it and its text dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from switchboard import metrics
from switchboard.inference import run_inference

logger = logging.getLogger(__name__)


class _Request:
    __slots__ = ("audio", "text")

    def __init__(self, audio: np.ndarray) -> None:
        self.audio = audio
        self.text: Future[str] = Future()


class BatchDecoder:
    """``await decoder(audio)`` → text, through ``decode_batch`` (blocking, many turns in, one text each out)."""

    def __init__(self, decode_batch: Callable[[list[np.ndarray]], list[str]], max_batch: int, engine: str) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.decode_batch = decode_batch
        self.max_batch = max_batch
        self.engine = engine
        self._queue: deque[_Request] = deque()
        self._lock = threading.Lock()

    async def __call__(self, audio: np.ndarray) -> str:
        request = _Request(audio)
        with self._lock:
            self._queue.append(request)
        try:
            await run_inference(self._decode_queued)
            return await asyncio.wrap_future(request.text)
        except asyncio.CancelledError:
            with self._lock:
                if request in self._queue:  # not taken into a batch yet: it is never decoded
                    self._queue.remove(request)
            raise

    def _take(self) -> list[_Request]:
        with self._lock:
            batch: list[_Request] = []
            while self._queue and len(batch) < self.max_batch:
                request = self._queue.popleft()
                if request.text.set_running_or_notify_cancel():
                    batch.append(request)
            return batch

    def _decode_queued(self) -> None:
        """On a pool thread: decode what is queued now (this job's own request, unless a running batch took it)."""
        batch = self._take()
        if not batch:
            return
        metrics.STT_BATCH_TURNS.labels(self.engine).observe(len(batch))
        try:
            texts = self.decode_batch([request.audio for request in batch])
            if len(texts) != len(batch):
                raise RuntimeError(f"{self.engine} returned {len(texts)} texts for {len(batch)} turns")
        except Exception as exc:  # every turn of the batch fails alike; each caller raises it in turn
            for request in batch:
                request.text.set_exception(exc)
            return
        for request, text in zip(batch, texts, strict=True):
            request.text.set_result(text)
