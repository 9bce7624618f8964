"""Kafka plumbing shared by every service: correlation headers, producer and
consumer factories tuned for real-time latency, topic creation, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import ConsumerRecord

from switchboard import codec, metrics
from switchboard.records import DeadLetter, now_us
from switchboard.settings import ServiceSettings
from switchboard.topics import CATALOG, DEADLETTER, Placement, Topic, topic_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Correlation:
    """Correlation IDs carried in every record's headers (and in log lines)."""

    call_id: str = ""
    session_id: str = ""
    agent_id: str = ""
    turn_id: str = ""
    traceparent: str = ""

    @classmethod
    def new_call(cls, call_id: str, session_id: str, agent_id: str) -> Correlation:
        trace = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        return cls(call_id=call_id, session_id=session_id, agent_id=agent_id, traceparent=trace)

    @classmethod
    def from_headers(cls, headers: Any) -> Correlation:
        h = {k: v.decode("utf-8", "replace") for k, v in (headers or ()) if v is not None}
        return cls(**{k: h.get(k, "") for k in cls.__slots__})  # type: ignore[arg-type]

    def child(self, turn_seq: int | None = None) -> Correlation:
        """Same trace, new span; optionally a new turn ID."""
        parts = self.traceparent.split("-")
        trace_id = parts[1] if len(parts) == 4 else secrets.token_hex(16)
        turn_id = f"{self.call_id}:{turn_seq}" if turn_seq is not None else self.turn_id
        return replace(self, turn_id=turn_id, traceparent=f"00-{trace_id}-{secrets.token_hex(8)}-01")

    def headers(self) -> list[tuple[str, bytes]]:
        return [(k, getattr(self, k).encode()) for k in self.__slots__ if getattr(self, k)]

    def log_ids(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k)}


def topic_name(settings: ServiceSettings, topic: Topic) -> str:
    return f"{settings.topic_prefix}{topic.name}"


def security_options(settings: ServiceSettings) -> dict[str, Any]:
    """TLS and SASL options for every Kafka client (Strimzi: SCRAM-SHA-512 over TLS per KafkaUser)."""
    opts: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_security_protocol.startswith("SASL_"):
        opts |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return opts


def make_producer(settings: ServiceSettings) -> AIOKafkaProducer:
    # linger 0: a 20 ms audio frame must not wait for company
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        linger_ms=0,
        acks=1,
        enable_idempotence=False,
        **security_options(settings),
    )


def consumer_options(settings: ServiceSettings) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(100, settings.session_timeout_ms // 6),
        "rebalance_timeout_ms": settings.rebalance_timeout_ms,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        **security_options(settings),
    }


def make_consumer(
    settings: ServiceSettings, *, group_id: str | None, topics: tuple[Topic, ...] = ()
) -> AIOKafkaConsumer:
    names = [topic_name(settings, t) for t in topics]
    return AIOKafkaConsumer(*names, group_id=group_id, **consumer_options(settings))


class Publisher:
    """Encodes typed records and produces them to their catalog topic."""

    def __init__(self, settings: ServiceSettings, producer: AIOKafkaProducer, service: str) -> None:
        self.settings = settings
        self.producer = producer
        self.service = service

    async def send(
        self, record: Any, corr: Correlation, *, partition: int | None = None, topic: Topic | None = None
    ) -> asyncio.Future[Any]:
        """Queue a record; returns the delivery future (await it before committing input offsets)."""
        topic = topic or topic_for(type(record))
        if topic.placement is Placement.REPLY_PARTITION and partition is None:
            raise ValueError(f"{topic.name} records need an explicit reply partition")
        key = getattr(record, "call_id", None)
        fut = await self.producer.send(
            topic_name(self.settings, topic),
            codec.encode(record),
            key=key.encode() if key else None,
            partition=partition,
            headers=corr.headers(),
        )
        metrics.RECORDS_PRODUCED.labels(self.service, topic.name).inc()
        return fut

    async def dead_letter(self, msg: ConsumerRecord, error: str) -> None:
        """Send a record we cannot process to the dead-letter topic, count it, and move on."""
        source = msg.topic.removeprefix(self.settings.topic_prefix)
        metrics.DEAD_LETTERS.labels(self.service, source).inc()
        logger.warning(
            "dead-lettered record",
            extra={"fields": {"topic": source, "partition": msg.partition, "offset": msg.offset, "error": error}},
        )
        record = DeadLetter(
            source_topic=source,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value or b"",
            error=error[:2000],
            service=self.service,
            ts_us=now_us(),
        )
        await (await self.send(record, Correlation.from_headers(msg.headers), topic=DEADLETTER))


async def create_topics(settings: ServiceSettings, partitions: int | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create every catalog topic that does not exist yet (idempotent). Returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **security_options(settings))
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(topic_name(settings, t), partitions or t.partitions, 1, topic_configs=t.configs)
            for t in CATALOG
            if topic_name(settings, t) not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another service created them first
                await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def wait_for_broker(settings: ServiceSettings, timeout_s: float = 30.0) -> None:
    await create_topics(settings, timeout_s=timeout_s)
