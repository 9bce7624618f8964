"""The enrich processor: collect each call's transcripts, replies and dialog
state; when the call ends, publish its ``CallSummary``.

Records of a call arriving after its call_ended (the last STT final, the
agent's final state) within ``late_window_s`` publish a revised summary; the
sink keeps the newest. Notes live in memory; ``commit_floor`` holds the
committed offsets back to the first record of every call still open, so after
a crash or a rebalance the new owner replays those calls from their start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from processors.enrich.analysis import MODEL, CallNotes, enrich
from processors.enrich.settings import EnrichSettings
from switchboard.records import (
    AgentReply,
    CallEvent,
    CallEventKind,
    CallSummary,
    DialogState,
    ReplyKind,
    Transcript,
    TranscriptKind,
    now_us,
)
from switchboard.runner import Incoming, Out
from switchboard.topics import AGENT_STATE, CALLS, REPLIES, TRANSCRIPTS, Topic

logger = logging.getLogger(__name__)


class Enricher:
    name = "enrich"
    inputs: tuple[Topic, ...] = (CALLS, TRANSCRIPTS, REPLIES, AGENT_STATE)

    def __init__(self, settings: EnrichSettings) -> None:
        self.settings = settings
        self.calls: dict[str, CallNotes] = {}

    async def on_assigned(self, partitions: set[int]) -> None:
        pass

    async def on_revoked(self, partitions: set[int]) -> None:
        self.calls.clear()

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        r = msg.record
        now = now_us()
        self._sweep(now)
        notes = self.calls.get(r.call_id)
        if notes is None:
            if isinstance(r, DialogState) and not r.ended:
                return  # state snapshots of calls we never saw start (changelog replay): nothing to add
            notes = self.calls[r.call_id] = CallNotes(r.call_id)
        notes.seen_us = now
        notes.partition = msg.partition
        notes.first_offsets.setdefault(msg.topic.name, msg.offset)
        changed = self._note(notes, r)
        if notes.ended_us is not None and changed:
            e = enrich(notes, self.settings.summary_max_chars)
            summary = CallSummary(
                call_id=notes.call_id, ts_us=now, summary=e.summary, sentiment=e.sentiment,
                caller_turns=len(notes.caller), goal_reached=e.goal_reached, handed_off=e.handed_off, model=MODEL,
                intent=e.intent, outcome=e.outcome, turn_sentiment=e.turn_sentiment,
            )
            logger.info("call enriched", extra={"fields": {"outcome": e.outcome, "intent": e.intent}})
            yield Out(summary, msg.corr)

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        offsets = [n.first_offsets[topic.name] for n in self.calls.values()
                   if n.partition == partition and topic.name in n.first_offsets]
        return min(offsets) if offsets else None

    def _note(self, notes: CallNotes, r: object) -> bool:
        """Fold one record into the notes; True if it matters for the summary."""
        if isinstance(r, CallEvent):
            if r.kind is CallEventKind.CALL_STARTED:
                notes.started_us, notes.channel = r.ts_us, r.channel
                return False
            if r.kind is CallEventKind.CALL_ENDED:
                notes.ended_us, notes.end_reason = r.ts_us, r.reason or ""
                notes.channel = notes.channel or r.channel
                return True
            return False
        if isinstance(r, Transcript):
            if r.kind is TranscriptKind.FINAL and r.text.strip():
                notes.caller[r.turn_seq] = r.text
                return True
            return False
        if isinstance(r, AgentReply):
            if r.kind is ReplyKind.SENTENCE:
                notes.agent.append((r.turn_seq, r.seq, r.text))
                if r.intent and (not notes.intents or notes.intents[-1] != r.intent):
                    notes.intents.append(r.intent)
                return True
            return False
        if isinstance(r, DialogState):
            notes.dialog_intent = r.intent or notes.dialog_intent
            notes.dialog_outcome = r.slots.get("outcome", notes.dialog_outcome)
            notes.dialog_done = notes.dialog_done or r.slots.get("done") == "true"
            return r.ended
        return False

    def _sweep(self, now: int) -> None:
        late = self.settings.late_window_s * 1e6
        old = self.settings.max_call_age_s * 1e6
        for call_id, n in list(self.calls.items()):
            if (n.ended_us is not None and now - n.seen_us > late) or now - n.seen_us > old:
                del self.calls[call_id]
