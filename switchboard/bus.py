"""Kafka plumbing shared by every service: correlation headers, producer and
consumer factories tuned for real-time latency, topic creation, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiokafka.admin.client
import aiokafka.client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import ConsumerRecord

from switchboard import codec, fetchwait, metrics
from switchboard.fetchwait import FetchWait
from switchboard.records import DeadLetter, now_us
from switchboard.settings import ServiceSettings
from switchboard.topics import CATALOG, DEADLETTER, Placement, Topic, topic_for

logger = logging.getLogger(__name__)


class _NoAutoCreate(MetadataRequest):
    """aiokafka asks every metadata request to auto-create missing topics, and tansu does: with 4 partitions.
    After a restart of a broker that lost its storage, the first client to ask for metadata would re-create
    the call-scoped topics with 4 partitions instead of SWITCHBOARD_PARTITIONS, and co-partitioning is gone for
    good. Topics are created by ``create_topics`` only: ours ask with allow_auto_topic_creation false."""

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation)


aiokafka.client.MetadataRequest = _NoAutoCreate  # type: ignore[misc]
aiokafka.admin.client.MetadataRequest = _NoAutoCreate  # type: ignore[misc]


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


def make_producer(settings: ServiceSettings, **options: Any) -> AIOKafkaProducer:
    """A producer for real time; ``options`` override aiokafka's (e.g. the ingress's larger batches)."""
    # linger 0: a 20 ms audio frame must not wait for company. acks=all: a record counts as sent (and its input
    # offset as done) only once every in-sync replica has it. Idempotence needs InitProducerId, which tansu 0.6
    # answers with UnknownError, so it is a setting (on for Apache Kafka).
    return AIOKafkaProducer(
        **{
            "bootstrap_servers": settings.kafka_bootstrap,
            "linger_ms": 0,
            "acks": "all",
            "enable_idempotence": settings.producer_idempotence,
            **security_options(settings),
            **options,
        }
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


def group_options(settings: ServiceSettings) -> dict[str, Any]:
    """Options of a consumer-group member: static membership (KIP-345) where the broker honours it, named by
    group_instance_id or else the container's HOSTNAME (a pod's name; the same across restarts of its container)."""
    name = settings.group_instance_id or os.environ.get("HOSTNAME", "")
    if settings.static_membership and name:
        return {"group_instance_id": name}
    return {}


class AdaptiveConsumer(AIOKafkaConsumer):
    """A consumer whose fetch wait adapts from the moment it starts: short while records flow,
    backing off while idle (``switchboard/fetchwait.py``)."""

    def __init__(self, *topics: str, fetch_wait: FetchWait, **options: Any) -> None:
        super().__init__(*topics, **options)
        self.fetch_wait = fetch_wait

    async def start(self) -> None:
        await super().start()
        fetchwait.attach(self, self.fetch_wait)


def make_consumer(
    settings: ServiceSettings,
    *,
    group_id: str | None,
    topics: tuple[Topic, ...] = (),
    keep_short: Callable[[], bool] | None = None,
) -> AdaptiveConsumer:
    """A consumer tuned for real time; ``keep_short`` holds the short fetch wait while it is true."""
    names = [topic_name(settings, t) for t in topics]
    wait = FetchWait.from_settings(settings, keep_short)
    group = group_options(settings) if group_id else {}
    return AdaptiveConsumer(*names, group_id=group_id, fetch_wait=wait, **consumer_options(settings), **group)


class CachedPartitioner:
    """aiokafka's default partitioner (murmur2 of the key), remembering each key's partition: murmur2 is pure
    Python (~15 µs a record), and a call produces every one of its audio records under the same key."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._cache: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return DefaultPartitioner()(key, all_partitions, available)
        cached = self._cache.get((key, len(all_partitions)))
        if cached is None:
            if len(self._cache) >= self.max_keys:  # bounded: ended calls' keys go, live ones come back
                self._cache.clear()
            cached = self._cache[(key, len(all_partitions))] = DefaultPartitioner()(key, all_partitions, available)
        return cached


class Publisher:
    """Encodes typed records and produces them to their catalog topic."""

    def __init__(self, settings: ServiceSettings, producer: AIOKafkaProducer, service: str) -> None:
        self.settings = settings
        self.producer = producer
        self.service = service
        self._topics: dict[str, tuple[str, Any]] = {}  # catalog name → (full name, produced counter): per record

    async def send(
        self, record: Any, corr: Correlation, *, partition: int | None = None, topic: Topic | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a record; returns the delivery future (await it before committing input offsets).

        ``timestamp_ms`` (default: now) is the record's Kafka timestamp, from which consumers measure
        the bus hop: a record that waited in a queue of ours before this call gives the time it was queued."""
        topic = topic or topic_for(type(record))
        if topic.placement is Placement.REPLY_PARTITION and partition is None:
            raise ValueError(f"{topic.name} records need an explicit reply partition")
        key = getattr(record, "call_id", None)
        named = self._topics.get(topic.name)
        if named is None:
            named = self._topics[topic.name] = (
                topic_name(self.settings, topic), metrics.RECORDS_PRODUCED.labels(self.service, topic.name))
        fut = await self.producer.send(
            named[0],
            codec.encode(record),
            key=key.encode() if key else None,
            partition=partition,
            timestamp_ms=timestamp_ms,
            headers=corr.headers(),
        )
        named[1].inc()
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


class PartitionCountError(RuntimeError):
    """The call-scoped topics do not all have the same partition count: a call's records would
    land on different partitions of different topics and reach different workers."""


def partition_verdict(counts: dict[str, int], wanted: int) -> str | None:
    """Judge the partition counts of existing topics against ``SWITCHBOARD_PARTITIONS``.

    Raises ``PartitionCountError`` when the topics disagree among themselves (co-partitioning
    broken: refuse to run). Returns a warning when they agree on a count other than the setting:
    the stack runs with the topics' count (Kafka cannot shrink a topic, and growing one re-maps
    keys, which breaks the order of live calls, so it is never done behind the operator's back).
    """
    distinct = sorted(set(counts.values()))
    if len(distinct) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in sorted(counts.items()))
        raise PartitionCountError(
            f"topics disagree on their partition count ({detail}): a call's records would reach different "
            f"workers. Recreate them with one count (SWITCHBOARD_PARTITIONS={wanted}, `switchboard topics create`)"
        )
    if distinct and distinct[0] != wanted:
        have = distinct[0]
        return (
            f"topics have {have} partitions but SWITCHBOARD_PARTITIONS={wanted}: running with {have} "
            f"(a stage can use at most {have} workers). To change it, add partitions to every topic at once "
            "between calls (kafka-topics --alter --partitions), or recreate the topics"
        )
    return None


async def check_partitions(settings: ServiceSettings, consumer: AIOKafkaConsumer, topics: list[Topic]) -> None:
    """At start-up: refuse topics that disagree on their partition count, warn about a count that
    differs from the setting (see ``partition_verdict``)."""
    counts: dict[str, int] = {}
    for topic in topics:
        name = topic_name(settings, topic)
        parts = consumer.partitions_for_topic(name)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(name)
        if parts:
            counts[topic.name] = len(parts)
    try:
        warning = partition_verdict(counts, settings.partitions)
    except PartitionCountError as exc:
        logger.error("partition counts disagree", extra={"fields": {"error": str(exc)}})
        raise
    if warning:
        logger.warning("partition count differs from the setting", extra={"fields": {"detail": warning}})


async def create_topics(settings: ServiceSettings, partitions: int | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create every catalog topic that does not exist yet (idempotent). Returns the ones created.

    New topics get ``settings.partitions`` partitions, unless topics of the catalog already exist:
    then they get the existing count (co-partitioning first), with a warning if it differs from
    the setting. Existing topics that disagree raise ``PartitionCountError``.
    """
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
        ours = {topic_name(settings, t): t for t in CATALOG}
        present = [name for name in ours if name in existing]
        count = partitions or settings.partitions
        if present:
            described = await admin.describe_topics(present)
            counts = {ours[d["topic"]].name: len(d["partitions"]) for d in described if d.get("partitions")}
            warning = partition_verdict(counts, count)
            if warning:
                logger.warning("partition count differs from the setting", extra={"fields": {"detail": warning}})
            if counts:
                count = next(iter(counts.values()))
        wanted = [
            NewTopic(name, count, 1, topic_configs=t.configs) for name, t in ours.items() if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another service created them first
                await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def wait_for_broker(settings: ServiceSettings, timeout_s: float = 30.0) -> None:
    await create_topics(settings, timeout_s=timeout_s)
