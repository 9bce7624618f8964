"""The agent processor: transcripts in, reply sentences out, state in a changelog.

Inputs: ``calls`` (greet on call_started), ``transcripts`` (reply to finals),
``turns`` (cancel a reply on barge-in). Outputs: ``replies`` and ``agent.state``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Protocol

from switchboard import metrics
from switchboard.bus import Correlation
from switchboard.records import (
    AgentReply,
    CallEvent,
    CallEventKind,
    DialogState,
    ReplyKind,
    Timings,
    Transcript,
    TranscriptKind,
    TurnEvent,
    TurnEventKind,
    now_us,
)
from switchboard.runner import Incoming, Out
from switchboard.topics import CALLS, TRANSCRIPTS, TURNS, Topic
from processors.agent.engine import ENDED, Agent

logger = logging.getLogger(__name__)


class StateStore(Protocol):
    async def restore(self, partitions: set[int]) -> dict[str, DialogState]: ...


class AgentProcessor:
    name = "agent"
    inputs: tuple[Topic, ...] = (CALLS, TRANSCRIPTS, TURNS)

    def __init__(self, engine: Agent, store: StateStore) -> None:
        self.engine = engine
        self.store = store
        self.states: dict[str, DialogState] = {}

    async def on_assigned(self, partitions: set[int]) -> None:
        self.states = await self.store.restore(partitions)

    async def on_revoked(self, partitions: set[int]) -> None:
        self.states.clear()

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        r = msg.record
        if isinstance(r, CallEvent):
            if r.kind is CallEventKind.CALL_STARTED and r.call_id not in self.states:
                state = DialogState(r.call_id, "greeting", 0, 0, r.reply_partition, r.language, False, now_us())
                self.states[r.call_id] = state
                async for out in self._reply(state, 0, None, msg.corr.child(0), Timings()):
                    yield out
            elif r.kind is CallEventKind.CALL_ENDED and (state := self.states.pop(r.call_id, None)):
                state.ended, state.updated_us = True, now_us()
                yield Out(state, msg.corr)
        elif isinstance(r, Transcript) and r.kind is TranscriptKind.FINAL:
            state = self.states.get(r.call_id)
            if state is None or state.ended or r.turn_seq <= state.last_turn_seq or not r.text.strip():
                return
            state.last_turn_seq = r.turn_seq
            state.turns += 1
            async for out in self._reply(state, r.turn_seq, r.text, msg.corr, r.timings or Timings()):
                yield out
        elif isinstance(r, TurnEvent) and r.kind is TurnEventKind.BARGE_IN and r.cancelled_turn_seq is not None:
            state = self.states.get(r.call_id)
            if state is not None:
                yield Out(self._record(state, r.cancelled_turn_seq, 0, ReplyKind.CANCEL, ""), msg.corr)

    def _record(self, state: DialogState, turn_seq: int, seq: int, kind: ReplyKind, text: str,
                timings: Timings | None = None) -> AgentReply:
        return AgentReply(state.call_id, turn_seq, seq, kind, text, state.reply_partition, self.engine.name, now_us(),
                          intent=state.intent, end_call=state.stage == ENDED and kind is ReplyKind.END,
                          timings=timings)

    async def _reply(self, state: DialogState, turn_seq: int, text: str | None, corr: Correlation,
                     timings: Timings) -> AsyncIterator[Out]:
        started = now_us()
        sentences = self.engine.greet(state) if text is None else self.engine.respond(state, text)
        seq = 0
        async for sentence in sentences:
            t = None
            if seq == 0:
                first = now_us()
                metrics.STAGE_LATENCY.labels("agent", self.engine.name).observe((first - started) / 1e6)
                t = replace(timings, agent_started_us=started, agent_first_sentence_us=first)
            yield Out(self._record(state, turn_seq, seq, ReplyKind.SENTENCE, sentence, t), corr)
            seq += 1
        yield Out(self._record(state, turn_seq, seq, ReplyKind.END, ""), corr)
        state.updated_us = now_us()
        logger.info("replied", extra={"fields": {"turn": turn_seq, "stage": state.stage, "intent": state.intent}})
        yield Out(replace(state, slots=dict(state.slots)), corr)
