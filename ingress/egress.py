"""Egress: this node's share of audio.out and playback, routed to its own calls.

Each ingress node owns the partitions p with p % node_count == node_index and
reads only those (manual assignment, no consumer group): its cost is O(its own
calls). A call is given one of them as its reply partition, announced in the
call_started event; TTS and the turns processor produce to it.

If a node dies its sockets die with it: the callers hear the line drop. When
it comes back it starts reading at the end of its partitions (old audio is
useless) and the calls it held are recorded as ended by the turns processor's
inactivity timeout (reason ``ingress_lost``).

What a restarted TTS re-emits (audio, ENDs, the call's filler) is harmless here: each call drops what it already
has, by (turn_seq, seq), and finishes a reply whose END never comes (ingress/calls.py, ingress/filler.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiokafka import AIOKafkaConsumer, TopicPartition

from ingress.calls import CallSession
from ingress.filler import PlaybackPolicy
from ingress.heard import HoldPolicy
from switchboard import codec, fetchwait, metrics, tracing
from switchboard.bus import consumer_options, topic_name
from switchboard.fetchwait import FetchWait
from switchboard.records import AudioOut, PlaybackCommand
from switchboard.settings import ServiceSettings
from switchboard.topics import AUDIO_OUT, PLAYBACK

logger = logging.getLogger(__name__)


class Egress:
    def __init__(self, settings: ServiceSettings, node_index: int, node_count: int) -> None:
        self.settings = settings
        self.node_index = node_index
        self.node_count = node_count
        self.sessions: dict[str, CallSession] = {}
        self.owned: list[int] = []
        self._load: Counter[int] = Counter()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.orphans = 0
        self.policy = PlaybackPolicy.from_settings(settings)  # filler and drain grace of this node's calls

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(group_id=None, **consumer_options(self.settings))
        await self._consumer.start()
        # while this node has calls, replies must reach them within a short fetch wait (tansu does not
        # wake a waiting fetch); with none, back off so an idle node does not spin
        fetchwait.attach(self._consumer, FetchWait.from_settings(self.settings, keep_short=lambda: bool(self.sessions)))
        out_name = topic_name(self.settings, AUDIO_OUT)
        parts = self._consumer.partitions_for_topic(out_name)
        if not parts:
            await self._consumer._client.force_metadata_update()
            parts = self._consumer.partitions_for_topic(out_name) or set()
        if not parts:
            raise RuntimeError(f"topic {out_name} does not exist: run `switchboard topics create`")
        if len(parts) != self.settings.partitions:  # reply partitions follow the topic as it is
            logger.warning(
                "audio.out partition count differs from the setting",
                extra={"fields": {"topic": len(parts), "SWITCHBOARD_PARTITIONS": self.settings.partitions}},
            )
        self.owned = sorted(p for p in parts if p % self.node_count == self.node_index)
        if not self.owned:
            raise RuntimeError(f"node {self.node_index}/{self.node_count} owns no partition of {len(parts)}")
        tps = [TopicPartition(topic_name(self.settings, t), p) for t in (AUDIO_OUT, PLAYBACK) for p in self.owned]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        self._task = asyncio.create_task(self._run(), name="egress")
        logger.info("egress started", extra={"fields": {"partitions": self.owned}})

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()

    def reply_partition(self) -> int:
        """The owned partition with the fewest calls."""
        return min(self.owned, key=lambda p: (self._load[p], p))

    def register(self, session: CallSession) -> None:
        self.sessions[session.info.call_id] = session
        session.set_policy(self.policy)
        session.hold_policy = HoldPolicy.from_settings(self.settings)  # pause grace and end guard (ingress/heard.py)
        self._load[session.reply_partition] += 1

    def unregister(self, session: CallSession) -> None:
        if self.sessions.get(session.info.call_id) is session:
            del self.sessions[session.info.call_id]
            self._load[session.reply_partition] -= 1

    async def _run(self) -> None:
        assert self._consumer is not None
        out_name = topic_name(self.settings, AUDIO_OUT)
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for tp, msgs in batch.items():
                is_audio = tp.topic == out_name
                topic = AUDIO_OUT if is_audio else PLAYBACK
                for msg in msgs:
                    metrics.RECORDS_CONSUMED.labels("egress", topic.name).inc()
                    try:
                        record = codec.decode(topic.record, msg.value)
                    except codec.DecodeError as exc:
                        metrics.DEAD_LETTERS.labels("egress", topic.name).inc()
                        logger.warning("undecodable egress record", extra={"fields": {"error": str(exc)}})
                        continue
                    session = self.sessions.get(record.call_id)
                    if session is None or session.ended.is_set():
                        self.orphans += 1
                        continue
                    if isinstance(record, AudioOut):
                        session.agent_audio(record, tracing.header(msg.headers))  # "" while tracing is off
                    elif isinstance(record, PlaybackCommand):
                        await session.playback(record)
