"""Caller audio of every call on this node to Kafka, off the sockets' read loops.

A socket's read loop must never wait on the broker: aiokafka's ``send()`` blocks while the batch
of the record's partition is full and the producer's one request in flight to that broker has not
come back (the producer has a single in-flight request per broker), so a slow broker would stall
the read, the caller's real-time audio would pile up in the socket, and calls would time out.
Here a read loop only appends to one FIFO for the node; one task hands its records to the producer
in order (so a call's audio stays in order) and stamps each with the time it was queued (so the
``audio.in`` hop includes any wait here).

The FIFO is bounded per call: at most ``backlog_samples`` of a call's audio may wait. What does not
fit is dropped and counted (``switchboard_audio_send_dropped_seconds_total``), never buffered
without limit; the node's bound is therefore its admission limit × the per-call bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchboard import metrics
from switchboard.bus import Correlation, Publisher
from switchboard.records import AudioFrame

logger = logging.getLogger(__name__)
YIELD_EVERY = 64  # records handed to the producer between two turns of the event loop


@dataclass(slots=True)
class _Queued:
    record: AudioFrame
    corr: Correlation
    samples: int
    queued_ms: int
    on_done: Callable[[asyncio.Future[Any]], None] | None


class AudioSendPath:
    """One FIFO of caller audio records per node, drained into the producer by one task."""

    def __init__(self, publisher: Publisher, backlog_samples: int, sample_rate: int) -> None:
        self.publisher = publisher
        self.backlog_samples = backlog_samples
        self.sample_rate = sample_rate
        self._fifo: deque[_Queued] = deque()
        self._waiting: dict[str, int] = {}  # samples of each call in the FIFO or being handed over
        self._flushed: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audio-send-path")

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Hand over what is queued (bounded), then stop."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                while self._fifo:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            logger.warning("audio send path stopped with records queued", extra={"fields": {"queued": len(self._fifo)}})
        self._task.cancel()
        self._task = None

    def offer(self, record: AudioFrame, corr: Correlation, channel: str, queued_ms: int,
              on_done: Callable[[asyncio.Future[Any]], None] | None = None) -> bool:
        """Queue one record of a call; False (dropped and counted) when the call's backlog is full."""
        samples = len(record.pcm) // 2
        waiting = self._waiting.get(record.call_id, 0)
        if waiting + samples > self.backlog_samples:
            metrics.AUDIO_SEND_DROPPED.labels(channel).inc(samples / self.sample_rate)
            return False
        self._waiting[record.call_id] = waiting + samples
        self._fifo.append(_Queued(record, corr, samples, queued_ms, on_done))
        metrics.AUDIO_SEND_QUEUED.inc()
        self._wake.set()
        return True

    def waiting(self, call_id: str) -> int:
        """Samples of this call not yet handed to the producer."""
        return self._waiting.get(call_id, 0)

    async def flushed(self, call_id: str, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until every record of the call queued so far is with the producer."""
        if not self._waiting.get(call_id):
            return True
        event = self._flushed.setdefault(call_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
            return True
        except TimeoutError:
            return False

    async def _run(self) -> None:
        handed = 0
        while True:
            if not self._fifo:
                self._wake.clear()
                await self._wake.wait()
                continue
            handed += 1
            if handed % YIELD_EVERY == 0:
                # producer.send rarely suspends: let the producer's sender task (and the sockets) run meanwhile
                await asyncio.sleep(0)
            item = self._fifo.popleft()
            metrics.AUDIO_SEND_QUEUED.dec()
            try:
                fut = await self.publisher.send(item.record, item.corr, timestamp_ms=item.queued_ms)
                if item.on_done is not None:
                    fut.add_done_callback(item.on_done)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. KafkaTimeoutError: this record is lost, the path goes on
                metrics.AUDIO_SEND_FAILED.inc()
                logger.warning("caller audio not handed to the producer", extra={"fields": {"error": repr(exc)}})
            self._done(item)

    def _done(self, item: _Queued) -> None:
        call_id = item.record.call_id
        left = self._waiting.get(call_id, 0) - item.samples
        if left > 0:
            self._waiting[call_id] = left
            return
        self._waiting.pop(call_id, None)
        event = self._flushed.pop(call_id, None)
        if event is not None:
            event.set()
