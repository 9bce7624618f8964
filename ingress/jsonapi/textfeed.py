"""Transcripts and agent replies of this node's JSON-API and softphone calls, read from the bus.

The text of a call (``transcripts``, ``replies``) is keyed by ``call_id`` and
placed by the default partitioner, not on the call's reply partition. So the
feed computes, for each subscribed call, the partition its key lands on and
reads only those partitions (manual assignment, no consumer group), filtering
by key. Its cost is O(text of the partitions its calls share), which is small
next to audio (a few records per turn), and it reads nothing while the node
holds no JSON/softphone call. Twilio and ACS calls never subscribe: their
callers only hear audio. The alternative (TTS copying the text onto the reply
partition of ``audio.out``) would make the cost O(own calls) exactly, at the
price of changing the TTS contract; see docs/channels.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from switchboard import codec, metrics
from switchboard.bus import consumer_options, topic_name
from switchboard.records import AgentReply, Transcript
from switchboard.settings import ServiceSettings
from switchboard.topics import REPLIES, TRANSCRIPTS

logger = logging.getLogger(__name__)
TextSink = Callable[[Transcript | AgentReply], None]
_partitioner = DefaultPartitioner()


class TextFeed:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._sinks: dict[str, TextSink] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._records = {topic_name(settings, t): t.record for t in (TRANSCRIPTS, REPLIES)}
        self._partitions: dict[str, list[int]] = {}

    @property
    def assigned(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer else set()

    async def _ensure_started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(group_id=None, **consumer_options(self.settings))
            await consumer.start()
            for name in self._records:
                parts = consumer.partitions_for_topic(name)
                if not parts:
                    await consumer._client.force_metadata_update()
                    parts = consumer.partitions_for_topic(name)
                if not parts:
                    await consumer.stop()
                    raise RuntimeError(f"topic {name} does not exist")
                self._partitions[name] = sorted(parts)
            self._consumer = consumer
            self._task = asyncio.create_task(self._run(), name="textfeed")
        return self._consumer

    def _wanted(self) -> set[TopicPartition]:
        return {
            TopicPartition(name, _partitioner(call_id.encode(), parts, parts))
            for call_id in self._sinks
            for name, parts in self._partitions.items()
        }

    async def _reassign(self, consumer: AIOKafkaConsumer) -> None:
        """Assign exactly the wanted partitions: kept ones resume where they were, new ones start at the end."""
        current = set(consumer.assignment())
        wanted = self._wanted()
        if wanted == current:
            return
        kept = {tp: await consumer.position(tp) for tp in current & wanted}
        consumer.assign(list(wanted))
        for tp, offset in kept.items():
            consumer.seek(tp, offset)
        new = list(wanted - current)
        if new:
            await consumer.seek_to_end(*new)
            for tp in new:  # resolve now, so nothing the call produces after subscribing is missed
                await consumer.position(tp)

    async def subscribe(self, call_id: str, sink: TextSink) -> None:
        async with self._lock:
            consumer = await self._ensure_started()
            self._sinks[call_id] = sink
            await self._reassign(consumer)

    async def unsubscribe(self, call_id: str) -> None:
        """The last call leaving stops the consumer: an idle feed reads nothing."""
        async with self._lock:
            if self._sinks.pop(call_id, None) is None or self._consumer is None:
                return
            if self._sinks:
                await self._reassign(self._consumer)
            else:
                await self._stop_locked()

    async def stop(self) -> None:
        async with self._lock:
            self._sinks.clear()
            await self._stop_locked()

    async def _stop_locked(self) -> None:
        task, consumer = self._task, self._consumer
        self._task, self._consumer = None, None
        if task:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if consumer:
            await consumer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            async with self._lock:  # asyncio.Lock is fair: a waiting subscribe() goes first
                batch = await consumer.getmany(timeout_ms=100) if consumer.assignment() else {}
            if not batch:
                await asyncio.sleep(0 if consumer.assignment() else 0.1)
            for tp, msgs in batch.items():
                record_type = self._records[tp.topic]
                for msg in msgs:
                    sink = self._sinks.get(msg.key.decode("utf-8", "replace") if msg.key else "")
                    if sink is None:
                        continue
                    metrics.RECORDS_CONSUMED.labels("ingress", tp.topic.removeprefix(self.settings.topic_prefix)).inc()
                    try:
                        sink(codec.decode(record_type, msg.value))
                    except codec.DecodeError as exc:
                        logger.warning("undecodable text record", extra={"fields": {"error": str(exc)}})
