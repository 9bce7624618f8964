"""The topic catalog: the one list of topics everything else reads
(topic creation, processors, sinks, the Strimzi manifests' consistency test).

Every call-scoped topic is keyed by ``call_id`` and all have the same partition
count, so one call's records are co-partitioned and ordered. The count is the
setting ``SWITCHBOARD_PARTITIONS`` (``ServiceSettings.partitions``, default
``CALL_PARTITIONS``): ``Topic.partitions`` is that default, what the manifests
and compose file are checked against; ``create_topics`` uses the setting. ``audio.out``
and ``playback`` are also keyed by ``call_id`` but produced to the call's
*reply partition*, owned by the ingress node holding the caller's socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from switchboard import records as r
from switchboard.settings import DEFAULT_PARTITIONS

CALL_PARTITIONS = DEFAULT_PARTITIONS
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class Placement(StrEnum):
    BY_KEY = "by_key"  # default partitioner on the call_id key
    REPLY_PARTITION = "reply_partition"  # explicit partition owned by one ingress node


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    record: type
    retention_ms: int
    doc: str
    partitions: int = CALL_PARTITIONS
    placement: Placement = Placement.BY_KEY
    compacted: bool = False
    key: str = "call_id"

    @property
    def configs(self) -> dict[str, str]:
        if self.compacted:
            return {"cleanup.policy": "compact"}
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}


CALLS = Topic("calls", r.CallEvent, 30 * DAY_MS, "call lifecycle and playback events")
AUDIO_IN = Topic("audio.in", r.AudioFrame, HOUR_MS, "caller audio, PCM16 16 kHz, records of one or more 20 ms frames")
TURNS = Topic("turns", r.TurnEvent, 30 * DAY_MS, "speech started, end of turn, barge-in")
SPEECH = Topic("speech", r.SpeechChunk, HOUR_MS, "a turn's caller audio for STT")
TRANSCRIPTS = Topic("transcripts", r.Transcript, 30 * DAY_MS, "partial and final transcripts")
REPLIES = Topic("replies", r.AgentReply, 30 * DAY_MS, "agent reply sentences")
AUDIO_OUT = Topic(
    "audio.out", r.AudioOut, HOUR_MS, "agent audio to the caller's ingress node", placement=Placement.REPLY_PARTITION
)
PLAYBACK = Topic(
    "playback", r.PlaybackCommand, HOUR_MS, "playback control (clear on barge-in)", placement=Placement.REPLY_PARTITION
)
LATENCY = Topic("latency", r.TurnLatency, 30 * DAY_MS, "per-turn latencies, measured at egress")
DEADLETTER = Topic("deadletter", r.DeadLetter, 14 * DAY_MS, "records a service could not process", key="source key")
USAGE = Topic("usage", r.EngineUsage, 30 * DAY_MS, "engine usage and cost per call step")
AGENT_STATE = Topic("agent.state", r.DialogState, 0, "agent conversation state changelog", compacted=True)
SUMMARIES = Topic("summaries", r.CallSummary, 30 * DAY_MS, "post-call enrichment: summary, sentiment, intent, outcome")

CATALOG: tuple[Topic, ...] = (
    CALLS,
    AUDIO_IN,
    TURNS,
    SPEECH,
    TRANSCRIPTS,
    REPLIES,
    AUDIO_OUT,
    PLAYBACK,
    LATENCY,
    DEADLETTER,
    USAGE,
    AGENT_STATE,
    SUMMARIES,
)

BY_NAME: dict[str, Topic] = {t.name: t for t in CATALOG}


def topic_for(record_type: type) -> Topic:
    for t in CATALOG:
        if t.record is record_type:
            return t
    raise KeyError(record_type)
