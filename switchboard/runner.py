"""The runner every processor shares: consume, decode, call the logic, produce what it yields,
commit only what is done and acknowledged.

Many calls at once: records of one call are handled in order, records of different calls
concurrently, a bounded number in flight (``switchboard/inflight.py`` keeps the order and the
offsets). A slow record (a Whisper decode, a streaming LLM reply) holds up its own call only.

A processor's logic is a plain async transform of typed records (see
``Processor``), unit-tested without Kafka; this module owns the wiring.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from switchboard import codec, inference, metrics, tracing
from switchboard.bus import (
    Correlation,
    PartitionCountError,
    Publisher,
    check_partitions,
    make_consumer,
    make_producer,
    topic_name,
)
from switchboard.inflight import InFlight, in_time_order
from switchboard.logs import correlation
from switchboard.recovery import BrokerCheck, MemberFile, leave_stale_member
from switchboard.settings import ServiceSettings
from switchboard.topics import Topic

logger = logging.getLogger(__name__)
IMPORTED = time.monotonic()  # about when the worker process started: the logs say how long start-up took
PAUSE_GRACE_S = 0.05  # saturated: how long to wait for the records in hand before pausing the partitions


@dataclass(slots=True)
class Incoming:
    record: Any
    corr: Correlation
    topic: Topic
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(slots=True)
class Out:
    """One record to publish; ``partition`` only for reply-partition topics."""

    record: Any
    corr: Correlation
    partition: int | None = None


class Processor(Protocol):
    name: str
    inputs: tuple[Topic, ...]

    def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        """Transform one input record into the records to publish."""
        ...

    async def on_assigned(self, partitions: set[int]) -> None: ...

    async def on_revoked(self, partitions: set[int]) -> None: ...

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        """The lowest offset of ``topic``/``partition`` still needed (e.g. the first chunk of an
        open turn), so a rebalance replays it on the new owner; None when nothing is held."""
        ...


class Watcher(Protocol):
    """Optional for a processor: records it must see *while* ``handle`` is busy (a barge-in
    cancelling a streaming reply). They are read by a second consumer on the same partition
    numbers as the group assignment, from their end, and also arrive in ``handle`` as usual."""

    watch: tuple[Topic, ...]

    async def on_watched(self, record: Any) -> None: ...


class _Watch:
    """The watcher consumer: follows the group's partitions, never commits."""

    def __init__(self, settings: ServiceSettings, processor: Any, busy: asyncio.Event) -> None:
        self.settings = settings
        self.processor = processor
        self.topics = {topic_name(settings, t): t for t in processor.watch}
        self.busy = busy
        self.consumer = make_consumer(settings, group_id=None, keep_short=busy.is_set)
        self.task: asyncio.Task[None] | None = None
        # it reads from the end: after a broker restart that lost the log, its position is past the new end
        self.check = BrokerCheck(settings, self.consumer, (), f"{processor.name}-watch")

    async def start(self) -> None:
        await self.consumer.start()
        self.task = asyncio.create_task(self._run(), name="watch")

    async def follow(self, partitions: set[int]) -> None:
        tps = [TopicPartition(name, p) for name in self.topics for p in partitions]
        self.consumer.assign(tps)
        if tps:
            await self.consumer.seek_to_end(*tps)
            if not self.busy.is_set():  # aiokafka prefetches in the background: paused, it does not
                self.consumer.pause(*tps)

    async def _run(self) -> None:
        while True:
            if not self.consumer.assignment():
                await asyncio.sleep(0.05)
                continue
            if not self.busy.is_set():
                # Nothing in flight: whatever arrives now reaches handle() at once, so there is
                # nothing to watch for; stop fetching (an idle worker must not poll the broker).
                # On resuming, records read meanwhile are stale hints, which on_watched tolerates.
                self.consumer.pause(*self.consumer.assignment())
                await self.busy.wait()
                self.consumer.resume(*self.consumer.paused())
            await self.check.check()
            for tp, msgs in (await self.consumer.getmany(timeout_ms=100)).items():
                topic = self.topics[tp.topic]
                for msg in msgs:
                    try:
                        await self.processor.on_watched(codec.decode(topic.record, msg.value))
                    except Exception:  # the group consumer dead-letters it; here it is only a hint
                        logger.exception("watched record failed")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.consumer.stop()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        metrics.ASSIGNED_PARTITIONS.labels(self.runner.processor.name).set(0)
        await self.runner.hand_back(revoked)
        await self.runner.processor.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in assigned}
        metrics.ASSIGNED_PARTITIONS.labels(self.runner.processor.name).set(len(assigned))
        self.runner.member_file.save(self.runner.consumer._coordinator.member_id)  # for a fast takeover on restart
        logger.info("partitions assigned", extra={"fields": {"partitions": sorted(parts),
                                                             "since_start_s": round(time.monotonic() - IMPORTED, 2)}})
        if self.runner.watch is not None:
            await self.runner.watch.follow(parts)
        await self.runner.processor.on_assigned(parts)
        self.runner.rebalancing = False


class Runner:
    """Consume, hand records to the processor concurrently by call, produce, commit.

    Records of one call (one Kafka key, across every input topic) are handled in order; records
    of different calls at once, up to ``max_in_flight`` (then the partitions are paused until
    half of them are done). Offsets are committed up to the first record not yet done and its
    outputs acknowledged, never past the processor's commit floor (``switchboard/inflight.py``).
    """

    def __init__(self, settings: ServiceSettings, processor: Processor, group_id: str | None = None) -> None:
        self.settings = settings
        self.processor = processor
        self.group_id = group_id or f"switchboard-{processor.name}"
        self.inflight = InFlight(settings.max_in_flight)
        self.consumer = make_consumer(settings, group_id=self.group_id, keep_short=self.inflight.busy.is_set)
        self.producer = make_producer(settings)
        self.publisher = Publisher(settings, self.producer, processor.name)
        self.rebalancing = False  # between a revocation and the next assignment: fetch nothing
        self.paused = False
        self._topics = {topic_name(settings, t): t for t in processor.inputs}
        self._stages = tracing.stages_of(processor)  # what of this processor's work is a span of a turn
        self._stopping = asyncio.Event()
        self._last_commit = 0.0
        # recovery (switchboard/recovery.py): this worker's group member ID for its successor, and the broker check
        self.member_file = MemberFile(settings, self.group_id)
        self.broker_check = BrokerCheck(settings, self.consumer, self._topics, processor.name)
        self._last_check = time.monotonic()
        self._checks = 0
        self.watch = _Watch(settings, processor, self.inflight.busy) if getattr(processor, "watch", ()) else None

    def stop(self) -> None:
        self._stopping.set()

    def _floor(self, tp: Any) -> int | None:
        return self.processor.commit_floor(self._topics[tp.topic], tp.partition)

    async def commit(self, tps: set[TopicPartition] | None = None) -> None:
        """Commit what is done (of ``tps``, or of the whole assignment)."""
        owned = tps if tps is not None else self.consumer.assignment()
        offsets = {tp: o for tp, o in self.inflight.commit_offsets(self._floor).items() if tp in owned}
        self._last_commit = time.monotonic()
        if not offsets:
            return
        await self.consumer.commit(offsets)
        self.inflight.committed(offsets)

    async def hand_back(self, revoked: set[TopicPartition]) -> None:
        """Partitions are being revoked: records still queued are dropped (the new owner replays
        them), running ones get ``drain_in_flight_s`` to finish, then what is done is committed."""
        self.rebalancing = True
        name = self.processor.name
        dropped, abandoned = await self.inflight.drain(revoked, self.settings.drain_in_flight_s)
        metrics.RECORDS_DROPPED.labels(name, "revoked").inc(dropped)
        metrics.RECORDS_DROPPED.labels(name, "abandoned").inc(abandoned)
        try:
            await self.commit(revoked)
        except KafkaError as exc:  # e.g. already out of the group: the new owner replays from the last commit
            logger.warning("commit on revocation failed", extra={"fields": {"error": repr(exc)}})
        self.inflight.forget(revoked)
        metrics.IN_FLIGHT.labels(name).set(self.inflight.count)

    async def _process(self, msg: ConsumerRecord, topic: Topic) -> list[asyncio.Future[Any]]:
        """Handle one record; returns the delivery futures of what it produced."""
        try:
            record = codec.decode(topic.record, msg.value)
        except codec.DecodeError as exc:
            await self.publisher.dead_letter(msg, str(exc))
            return []
        corr = Correlation.from_headers(msg.headers)
        incoming = Incoming(record, corr, topic, msg.partition, msg.offset, msg.timestamp)
        futures: list[asyncio.Future[Any]] = []
        # tracing on and a traced stage: a span of this handle(), whose context the outputs carry (else None)
        span = tracing.handle_span(self._stages, record, corr.traceparent, topic.name)
        with correlation(**corr.log_ids()):
            try:
                async for out in self.processor.handle(incoming):
                    out_corr = out.corr if span is None else span.stamp(out.record, out.corr)
                    futures.append(await self.publisher.send(out.record, out_corr, partition=out.partition))
            except Exception as exc:
                logger.exception("processing failed")
                if span is not None:
                    span.fail(exc)
                await self.publisher.dead_letter(msg, f"{type(exc).__name__}: {exc}")
            finally:
                if span is not None:
                    span.end()
        return futures

    def _submit(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        now_ms = time.time() * 1000
        owned = self.consumer.assignment()
        name = self.processor.name
        mine = {tp: msgs for tp, msgs in batch.items() if tp in owned}  # else fetched just before a revocation
        for tp, msgs in mine.items():
            topic = self._topics[tp.topic].name
            metrics.RECORDS_CONSUMED.labels(name, topic).inc(len(msgs))
            hop = metrics.BUS_HOP.labels(name, topic)
            for msg in msgs:
                hop.observe(max(0.0, now_ms - msg.timestamp) / 1000)
        # a call's records of different topics in the order they were produced (an END_OF_TURN before the final)
        for tp, msg in in_time_order(mine, lambda m: m.timestamp):
            # one lane per call: the key is the call ID on every input topic (co-partitioned)
            key = msg.key if msg.key is not None else (tp.topic, tp.partition)
            self.inflight.submit(tp, msg.offset, key, functools.partial(self._process, msg, self._topics[tp.topic]))

    async def _relieved_within(self, grace_s: float) -> bool:
        """Wait (at most ``grace_s``) for the records just handed out to bring the count down to the low-water mark.
        A full fetch reaches the limit at once, and most records are done a few loop iterations later; pausing then
        would throw away what aiokafka has already fetched for the partitions (a paused partition's buffered records
        are dropped and fetched again on resume), which at 200 callers paused the turns worker ~4 times a second
        and fell behind the audio (README "Load testing"). Nothing new is taken meanwhile: the limit still holds."""
        deadline = time.monotonic() + grace_s
        while not self.inflight.relieved and self.inflight.error is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self.inflight.wait(remaining)
        return True

    def _pause(self) -> None:
        self.consumer.pause(*self.consumer.assignment())
        self.paused = True
        metrics.PAUSES.labels(self.processor.name).inc()
        logger.info("in-flight limit reached: partitions paused", extra={"fields": {"in_flight": self.inflight.count}})

    def _resume(self) -> None:
        self.consumer.resume(*self.consumer.paused())
        self.paused = False

    async def _step(self) -> None:
        if self.inflight.error is not None:
            raise RuntimeError("an output was not acknowledged by the broker") from self.inflight.error
        if self.rebalancing:
            await self.inflight.wait(0.05)
        elif self.paused:
            await self.inflight.wait(0.1)
            if self.inflight.relieved:
                self._resume()
        else:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=max(1, self.inflight.room))
            if not self.rebalancing:
                self._submit(batch)
            if self.inflight.saturated and not await self._relieved_within(PAUSE_GRACE_S):
                self._pause()
        metrics.IN_FLIGHT.labels(self.processor.name).set(self.inflight.count)
        # commits cost a broker round trip: at most ten a second (a crash replays a little more)
        if not self.rebalancing and time.monotonic() - self._last_commit >= 0.1:
            try:
                await self.commit()
            except KafkaError as exc:  # out of the group (the broker restarted, the session expired): rejoin replays
                metrics.BROKER_RECOVERIES.labels(self.processor.name, "commit_failed").inc()
                logger.warning("commit failed", extra={"fields": {"error": repr(exc)}})
        if time.monotonic() - self._last_check >= self.settings.broker_check_s:
            await self._check_broker()

    async def _check_broker(self) -> None:
        """Every broker_check_s: positions past a lost log's end; every tenth time, or when something looks
        wrong, the topics too (``BrokerCheck``)."""
        self._last_check = time.monotonic()
        self._checks += 1
        lost = await self.broker_check.check(full=self._checks % 10 == 0)
        if lost:  # their offsets belong to the old log: forget them, or a commit would point past the new end
            await self.inflight.drain(lost, 0)
            self.inflight.forget(lost)

    async def run(self) -> None:
        inference.configure(self.settings.inference_threads)
        # from the first client on: whatever fails (no broker at all), every client started is stopped
        try:
            await self.producer.start()
            if self.watch is not None:
                await self.watch.start()
            names = list(self._topics)
            self.consumer.subscribe(names, listener=_Rebalance(self))
            logger.info("joining the group", extra={"fields": {"group": self.group_id,
                                                              "since_start_s": round(time.monotonic() - IMPORTED, 2)}})
            await self.consumer._client.bootstrap()  # no broker: raises, and serve() exits 3 for a restart
            # topics lost with a restarted broker (nothing auto-creates them any more: switchboard/bus.py)
            await self.broker_check.check(full=True)
            stale = self.member_file.load()
            if stale:  # our predecessor died without leaving: drop it now rather than wait out its session
                await leave_stale_member(self.consumer, self.group_id, stale, self.processor.name)
            await self.consumer.start()
            await check_partitions(self.settings, self.consumer, list(self._topics.values()))
            logger.info("processor started", extra={"fields": {"group": self.group_id, "topics": names}})
            while not self._stopping.is_set():
                await self._step()
        finally:
            try:
                await self.inflight.close(self.settings.drain_in_flight_s)
                if not self.rebalancing and self.inflight.error is None:
                    await self.commit()
            finally:
                if self.watch is not None:
                    await self.watch.stop()
                await self.consumer.stop()
                await self.producer.stop()
                logger.info("processor stopped")


def serve(settings: ServiceSettings, processor: Processor) -> None:
    """Run a processor until SIGINT/SIGTERM: the body of every processor's ``main()``."""

    async def main() -> None:
        metrics.serve(settings.metrics_port, settings.metrics_host, processor.name)
        runner = Runner(settings, processor)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop)
        await runner.run()

    try:
        asyncio.run(main())
    except PartitionCountError:  # logged with the fix by check_partitions; no traceback
        raise SystemExit(2) from None
    except Exception as exc:
        # A Kafka client that cannot go on (aiokafka's UnknownError, an output the broker never acknowledged): a
        # worker that stays alive without consuming would hold its partitions for nothing. Exit non-zero, so the
        # supervisor (`switchboard up`, Kubernetes) starts a fresh one; what was not committed is replayed.
        logger.error("worker failed; exiting so that it is restarted", exc_info=True,
                     extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
        raise SystemExit(3) from None
