"""Getting a worker's Kafka clients through a crash of their own or a restart of the broker.

Two jobs, both for brokers that keep no state across a restart (tansu on memory storage) and for
restarts of our own processes:

- ``MemberFile`` / ``leave_stale_member``: a worker killed with kill -9 never leaves its consumer
  group, and the broker waits out its session before the group can rebalance; a worker restarted
  under the same ``group_instance_id`` reads its predecessor's member ID from ``member_dir`` and
  asks the broker to drop it at once (LeaveGroup), so the rejoin costs one short rebalance. Apache
  Kafka has static membership for this (KIP-345, ``static_membership``); tansu 0.6 does not honour
  it (measured in ``bench/takeover.py``).
- ``BrokerCheck``: after a broker restart that lost its storage, the topics are gone and every log
  starts again at offset 0. aiokafka neither re-creates topics nor notices that its fetch position
  (say 5,000) is now past the end of the log (tansu answers such a fetch with no records and no
  error), so a consumer would wait forever: the egress heard no greeting again. The check runs every
  ``broker_check_s``: missing topics are re-created, positions past the log end move to its start.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import CoordinationType
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.protocol.metadata import MetadataRequest

from switchboard import metrics
from switchboard.bus import create_topics
from switchboard.settings import ServiceSettings

logger = logging.getLogger(__name__)


class MemberFile:
    """Where a worker keeps its consumer group member ID (one small file per group and worker name)."""

    def __init__(self, settings: ServiceSettings, group_id: str) -> None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{group_id}.{settings.group_instance_id}")
        self.path = Path(settings.member_dir) / f"{name}.member" if (
            settings.member_dir and settings.group_instance_id and not settings.static_membership) else None

    def load(self) -> str | None:
        if self.path is None:
            return None
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def save(self, member_id: str) -> None:
        if self.path is None or not member_id:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(member_id)
        except OSError as exc:  # a read-only folder costs only the fast takeover
            logger.warning("cannot keep the group member ID", extra={"fields": {"path": str(self.path),
                                                                               "error": str(exc)}})


async def leave_stale_member(consumer: AIOKafkaConsumer, group_id: str, member_id: str, service: str) -> bool:
    """Ask the group coordinator to drop ``member_id`` (our dead predecessor). Best effort: a broker that
    does not know it (it expired, or the broker restarted) answers with an error, which changes nothing."""
    client = consumer._client
    try:
        await client.bootstrap()
        node = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
        response = await asyncio.wait_for(client.send(node, LeaveGroupRequest(group_id, member_id)), 5)
    except (KafkaError, OSError, TimeoutError) as exc:
        logger.info("could not drop the previous member", extra={"fields": {"member": member_id, "error": repr(exc)}})
        return False
    ok = getattr(response, "error_code", 1) == 0
    if ok:
        metrics.BROKER_RECOVERIES.labels(service, "stale_member_dropped").inc()
    logger.info("previous member of this worker dropped" if ok else "previous member already gone",
                extra={"fields": {"member": member_id, "group": group_id}})
    return ok


class BrokerCheck:
    """Re-create lost topics and move fetch positions that are past a log's end back to its start."""

    def __init__(self, settings: ServiceSettings, consumer: AIOKafkaConsumer, topics: Iterable[str],
                 service: str) -> None:
        self.settings = settings
        self.consumer = consumer
        self.topics = list(topics)
        self.service = service

    async def topics_missing(self) -> list[str]:
        """Our topics the broker does not have: one metadata request for them, never auto-creating (raises while
        the broker is down)."""
        client = self.consumer._client
        node = client.get_random_node()
        if node is None:
            raise KafkaConnectionError("no broker known")
        response = await asyncio.wait_for(client.send(node, MetadataRequest(self.topics, False)), 5)
        cluster = ClusterMetadata()
        cluster.update_metadata(response)
        return [t for t in self.topics if not cluster.partitions_for_topic(t)]

    async def recreate_topics(self) -> list[str]:
        missing = await self.topics_missing()
        if not missing:
            return []
        logger.warning("topics missing on the broker (restarted without its storage?): re-creating them",
                       extra={"fields": {"topics": missing}})
        created = await create_topics(self.settings, timeout_s=5)
        metrics.BROKER_RECOVERIES.labels(self.service, "topics_recreated").inc()
        await self.consumer._client.force_metadata_update()
        return created

    def past_end(self) -> list[TopicPartition]:
        """Assigned partitions whose fetch position is beyond the end of the log that the last fetch reported
        (local state, no request): the broker lost or truncated the log."""
        assignment = self.consumer._subscription.subscription
        if assignment is None:
            return []
        out = []
        for tp in self.consumer.assignment():
            state = assignment.assignment.state_value(tp)
            if state is None or not state.has_valid_position or state.highwater is None:
                continue
            if state.position > state.highwater:
                out.append(tp)
        return out

    async def check(self, full: bool = False) -> list[TopicPartition]:
        """One round. Locally: positions past their log's end move to its start (returned). With ``full``, when
        such a position was found or when the consumer holds no partition: a metadata request, re-creating lost
        topics (and letting a group consumer see topics re-created by someone else). Errors (the broker is still
        down) wait for the next round."""
        lost = self.past_end()
        try:
            if full or lost or not self.consumer.assignment():
                await self.recreate_topics()
            if lost:
                logger.warning("fetch positions past the end of the log (the broker lost or truncated it): "
                               "reading those partitions from their start",
                               extra={"fields": {"partitions": len(lost), "topics": sorted({t.topic for t in lost})}})
                await self.consumer.seek_to_beginning(*lost)
                metrics.BROKER_RECOVERIES.labels(self.service, "positions_reset").inc(len(lost))
        except (KafkaError, OSError, TimeoutError) as exc:
            logger.info("broker check failed; retrying", extra={"fields": {"error": repr(exc)}})
            return []
        return lost
