"""What every channel handler needs: the producer, the egress, admission and draining."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import replace

from aiokafka import AIOKafkaProducer

from ingress.callparts import CallerSocket, CallInfo, CallLimits
from ingress.calls import CallSession
from ingress.egress import Egress
from ingress.limits import SourceLimits, networks
from ingress.sendpath import AudioSendPath
from ingress.settings import IngressSettings
from switchboard import looplag, metrics
from switchboard.audio import BUS_RATE
from switchboard.bus import CachedPartitioner, Publisher, make_producer, topic_name
from switchboard.recovery import BrokerCheck
from switchboard.redact import caller_hash_key, published_caller
from switchboard.topics import AUDIO_IN, AUDIO_OUT, CALLS, PLAYBACK

logger = logging.getLogger(__name__)


class Rejected(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class IngressRuntime:
    def __init__(self, settings: IngressSettings) -> None:
        self.settings = settings
        self.node = f"{socket.gethostname()}-{settings.ingress_node_index}"
        self.producer: AIOKafkaProducer | None = None
        self.publisher: Publisher | None = None
        # call admission's own producer: aiokafka keeps one request in flight per connection, and the audio producer's
        # requests carry up to a megabyte of every call's audio; a call_started behind them waited 0.4–1.9 s under a
        # burst of 200 call starts, holding up the greeting (README "Load testing")
        self.admission_producer: AIOKafkaProducer | None = None
        self.admission_publisher: Publisher | None = None
        self.send_path: AudioSendPath | None = None
        self.egress = Egress(settings, settings.ingress_node_index, settings.ingress_node_count)
        self.draining = False
        self.ready = False
        self._watchdog: asyncio.Task[None] | None = None
        self._lag: asyncio.Task[None] | None = None
        self.sources = SourceLimits(settings.call_starts_per_source_per_minute, settings.max_calls_per_source,
                                    networks(settings.source_limit_exempt))
        self.trusted_proxies = networks(settings.trusted_proxies)
        self.call_limits = CallLimits(settings.max_audio_speed, settings.audio_burst_s, settings.max_dtmf_digits,
                                      settings.max_dtmf_per_s, settings.audio_record_ms)

    def _make_producer(self) -> AIOKafkaProducer:
        # aiokafka clients must be created inside the running loop
        # large batches: while tansu answers the producer's one request in flight, every partition's audio
        # gathers in its batch, and a full batch makes send() wait (ingress/sendpath.py)
        return make_producer(self.settings, linger_ms=self.settings.producer_linger_ms,
                             max_batch_size=self.settings.producer_batch_bytes,
                             max_request_size=max(1_048_576, 4 * self.settings.producer_batch_bytes),
                             partitioner=CachedPartitioner())

    async def start(self) -> None:
        self.producer = self._make_producer()
        self.publisher = Publisher(self.settings, self.producer, "ingress")
        await self.producer.start()
        self.admission_producer = make_producer(self.settings, partitioner=CachedPartitioner())
        self.admission_publisher = Publisher(self.settings, self.admission_producer, "ingress")
        await self.admission_producer.start()
        self.send_path = AudioSendPath(self.publisher, self.settings.audio_send_backlog_ms * BUS_RATE // 1000, BUS_RATE)
        self.send_path.start()
        await self.egress.start()
        self._watchdog = asyncio.create_task(self._watch_broker(), name="broker watchdog")
        self._lag = looplag.start("ingress")
        self.ready = True

    async def _watch_broker(self) -> None:
        """Every broker_check_s, put the node's Kafka clients right after a broker restart (switchboard/recovery.py):
        lost topics re-created, the egress's positions past a lost log's end moved to its start (else no caller on
        this node would hear the agent again), a dead egress loop or producer replaced. Never raises."""
        names = [topic_name(self.settings, t) for t in (CALLS, AUDIO_IN, AUDIO_OUT, PLAYBACK)]
        rounds = 0
        while True:
            await asyncio.sleep(self.settings.broker_check_s)
            rounds += 1
            try:
                await self._check_clients(names, full=rounds % 10 == 0)
            except Exception:  # the next round tries again; the watchdog itself must not die
                logger.exception("broker check failed")

    async def _check_clients(self, names: list[str], full: bool) -> None:
        consumer = self.egress._consumer
        if consumer is not None:
            await BrokerCheck(self.settings, consumer, names, "ingress").check(full)
        task = self.egress._task
        if task is not None and task.done():  # the egress loop died (a fatal client error): start a fresh one
            error = None if task.cancelled() else task.exception()
            logger.error("egress stopped; restarting it", extra={"fields": {"error": repr(error)}})
            metrics.BROKER_RECOVERIES.labels("ingress", "egress_restarted").inc()
            await self.egress.stop()
            await self.egress.start()
        admission = self.admission_producer
        if admission is not None and admission._sender.sender_task.done() and self.admission_publisher is not None:
            logger.error("admission producer stopped; replacing it")
            metrics.BROKER_RECOVERIES.labels("ingress", "producer_replaced").inc()
            self.admission_producer = make_producer(self.settings, partitioner=CachedPartitioner())
            await self.admission_producer.start()
            self.admission_publisher.producer = self.admission_producer
            await admission.stop()
        sender = self.producer._sender.sender_task if self.producer is not None else None
        if sender is not None and sender.done() and self.publisher is not None:  # a producer that can no longer send
            logger.error("producer stopped; replacing it")
            metrics.BROKER_RECOVERIES.labels("ingress", "producer_replaced").inc()
            old, self.producer = self.producer, self._make_producer()
            await self.producer.start()
            self.publisher.producer = self.producer
            await old.stop()

    async def stop(self) -> None:
        self.ready = False
        for task in (self._watchdog, self._lag):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        async def close(session: CallSession) -> None:
            await session.socket.close(1012, "ingress shutting down")
            await session.end("ingress_shutdown")

        # at once, not one after another: each end waits (bounded) for its call's queued audio to reach the producer
        await asyncio.gather(*(close(s) for s in list(self.egress.sessions.values())))
        await self.egress.stop()
        if self.send_path:
            await self.send_path.stop()
        if self.producer:
            await self.producer.stop()
        if self.admission_producer:
            await self.admission_producer.stop()

    async def drain(self) -> None:
        """Stop admitting calls; wait (bounded) for the active ones to end."""
        self.draining = True
        logger.info("draining", extra={"fields": {"active_calls": len(self.egress.sessions)}})
        deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout_s
        while self.egress.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)

    async def open_call(self, info: CallInfo, sock: CallerSocket, connected_at: float | None = None) -> CallSession:
        """Admit a call. ``connected_at`` (monotonic) is when its socket opened: the caller's audio budget runs
        from then, so audio sent while the call was being admitted is not "too fast"."""
        if self.draining or not self.ready:
            metrics.BAD_INPUT.labels(info.channel, "not_ready").inc()
            raise Rejected(1013, "ingress is draining, try again later")
        if len(self.egress.sessions) >= self.settings.max_calls:
            metrics.BAD_INPUT.labels(info.channel, "over_capacity").inc()
            raise Rejected(1013, "too many calls on this node")
        if info.call_id in self.egress.sessions:
            metrics.BAD_INPUT.labels(info.channel, "duplicate_call").inc()
            raise Rejected(1008, f"call {info.call_id} is already connected")
        assert self.publisher is not None
        # the raw caller number stays in this process: call events carry what caller_number_mode says
        number, attrs = published_caller(info.caller_number, self.settings.caller_number_mode,
                                         caller_hash_key(self.settings.caller_hash_key.get_secret_value()))
        info = replace(info, caller_number=number, attributes={**info.attributes, **attrs})
        session = CallSession(
            info, sock, self.publisher, self.egress.reply_partition(), self.node, self.settings.playout_lead_ms,
            self.call_limits, self.send_path, connected_at, self.admission_publisher,
        )
        self.egress.register(session)
        t0 = time.perf_counter()
        try:
            await session.start()
            metrics.CALL_START_STEP.labels("call_started").observe(time.perf_counter() - t0)
        except Exception:
            self.egress.unregister(session)
            raise
        return session

    async def close_call(self, session: CallSession, reason: str) -> None:
        await session.end(reason)
        self.egress.unregister(session)
