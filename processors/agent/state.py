"""Conversation state per call, backed by the compacted ``agent.state`` changelog.

The changelog is co-partitioned with the input topics (same key, same
partition count), so a worker that is assigned partition p restores exactly the
calls it will now serve by reading ``agent.state`` partition p to its end.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from switchboard import codec
from switchboard.bus import consumer_options, topic_name
from switchboard.records import DialogState
from switchboard.settings import ServiceSettings
from switchboard.topics import AGENT_STATE

logger = logging.getLogger(__name__)


class ChangelogStore:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings

    async def restore(self, partitions: set[int]) -> dict[str, DialogState]:
        if not partitions:
            return {}
        name = topic_name(self.settings, AGENT_STATE)
        consumer = AIOKafkaConsumer(group_id=None, **consumer_options(self.settings))
        await consumer.start()
        states: dict[str, DialogState] = {}
        try:
            tps = [TopicPartition(name, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if end[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=200)
                for msgs in batch.values():
                    for msg in msgs:
                        try:
                            state = codec.decode(DialogState, msg.value)
                        except codec.DecodeError:
                            logger.warning(
                                "skipping undecodable changelog record", extra={"fields": {"offset": msg.offset}}
                            )
                            continue
                        if state.ended:
                            states.pop(state.call_id, None)
                        else:
                            states[state.call_id] = state
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        logger.info("state restored", extra={"fields": {"partitions": sorted(partitions), "calls": len(states)}})
        return states


class MemoryStore:
    """For unit tests of the logic: a changelog that lives in a dict."""

    def __init__(self) -> None:
        self.saved: dict[str, DialogState] = {}

    async def restore(self, partitions: set[int]) -> dict[str, DialogState]:
        return dict(self.saved)
