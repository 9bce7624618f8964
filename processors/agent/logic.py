"""The agent processor: transcripts in, reply sentences out, state in a changelog.

Inputs: ``calls`` (greet on call_started; answer key presses and silences), ``transcripts`` (reply to finals;
speculate on early ones: processors/agent/speculation.py), ``turns`` (cancel a reply on barge-in).
Outputs: ``replies``, ``agent.state``, ``usage`` (tokens and cost per reply) and ``calls`` (engine fallbacks).

A reply streams from its engine in a task of its own (``pumped``); a barge-in
for the turn being answered sets the call's stop event, which ends the reply at
once and cancels the engine (for the LLM: closes its HTTP stream). The runner
hands one call's records to ``handle`` in order (other calls run concurrently),
so barge-ins also reach the agent through the runner's watcher
(``watch``/``on_watched``), a second reader of ``turns`` that delivers them
while the call's reply is still streaming. The ``cancel`` record then stops
whatever audio was already made, downstream.

The watcher also reads ``calls``: a ``call_ended`` stops the call's reply and
no greeting or reply is made for a call that has ended (``EndedCalls``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Protocol

from processors.agent import heard, policy
from processors.agent.engine import ENDED, Agent
from processors.agent.speculation import (
    Speculation,
    SpeculationMode,
    allowed,
    confirms,
    ends_silent_after,
    fork,
    normalised,
    thrown_away,
)
from processors.resilience import Fallback, Journal, Usage, pumped
from processors.usage import PriceTable
from switchboard import metrics
from switchboard.bus import Correlation
from switchboard.ended import EndedCalls
from switchboard.records import (
    AgentReply,
    CallEvent,
    CallEventKind,
    DialogState,
    EngineUsage,
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

logger = logging.getLogger(__name__)

_PLAYBACK = (CallEventKind.PLAYBACK_STARTED, CallEventKind.PLAYBACK_FINISHED, CallEventKind.PLAYBACK_CLEARED)
_EVERY_TURN = 2**62  # interrupt() through this turn: whatever reply is streaming
INPUT_SEQ_SLOT = "input.seq"  # turn_seq of the last key press or silence answered: a replay is not answered twice


class StateStore(Protocol):
    async def restore(self, partitions: set[int]) -> dict[str, DialogState]: ...


class AgentProcessor:
    name = "agent"
    inputs: tuple[Topic, ...] = (CALLS, TRANSCRIPTS, TURNS)
    watch: tuple[Topic, ...] = (TURNS, CALLS)  # barge-ins and hang-ups must cut a streaming reply short

    def __init__(
        self,
        engine: Agent,
        store: StateStore,
        prices: PriceTable | None = None,
        speculate: SpeculationMode | str = SpeculationMode.OFFLINE,
    ) -> None:
        self.engine = engine
        self.store = store
        self.states: dict[str, DialogState] = {}
        self.journal: Journal | None = getattr(engine, "journal", None)
        self.prices = prices or PriceTable()
        self.calls: dict[str, CallEvent] = {}  # call_started events, for the engine events of the call
        self.replying: dict[str, tuple[int, asyncio.Event]] = {}  # call_id → (turn being answered, stop)
        self.ended = EndedCalls()
        self.speculate = SpeculationMode(speculate)  # SWITCHBOARD_SPECULATIVE_REPLY (processors/agent/speculation.py)
        self.speculations: dict[str, Speculation] = {}  # call_id → its one speculative reply, until confirmed or not
        # call_id → its turn's END_OF_TURN that came before the early transcript it names (another topic), until then
        self.turn_ends: dict[str, TurnEvent] = {}

    async def on_assigned(self, partitions: set[int]) -> None:
        self.states = await self.store.restore(partitions)

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        self.states.clear()
        self.calls.clear()
        self.speculations.clear()  # the new owner of the partition speculates again, or answers the final
        self.turn_ends.clear()

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        r = msg.record
        if isinstance(r, CallEvent):
            if r.kind is CallEventKind.CALL_STARTED and r.call_id in self.ended:
                metrics.ENDED_CALL_SKIPS.labels(self.name, "greeting").inc()
            elif r.kind is CallEventKind.CALL_STARTED and r.call_id not in self.states:
                state = DialogState(r.call_id, "greeting", 0, 0, r.reply_partition, r.language, False, now_us())
                state.slots.update(self._choices(r.attributes))
                self.states[r.call_id] = state
                self.calls[r.call_id] = r
                async for out in self._reply(state, 0, None, msg.corr.child(0), Timings()):
                    yield out
            elif r.kind is CallEventKind.CALL_ENDED and (state := self._end(r.call_id)):
                state.ended, state.updated_us = True, now_us()
                yield Out(state, msg.corr)
            elif r.kind in (CallEventKind.DTMF, CallEventKind.SILENCE):
                async for out in self._caller_input(r, msg.corr):
                    yield out
            elif r.kind in _PLAYBACK:
                for out in self._playback(r, msg.corr):
                    yield out
        elif isinstance(r, Transcript) and r.kind is TranscriptKind.EARLY:
            async for out in self._speculate(r, msg.corr):
                yield out
        elif isinstance(r, Transcript) and r.kind is TranscriptKind.FINAL:
            state = self.states.get(r.call_id)
            if state is None or state.ended or r.turn_seq <= state.last_turn_seq:
                return
            self.turn_ends.pop(r.call_id, None)
            spec = self.speculations.pop(r.call_id, None)
            if spec is not None and confirms(spec, state, r.turn_seq, r.text) and r.call_id not in self.ended:
                async for out in self._adopt(spec, msg.corr, r.timings or Timings(), "final"):
                    yield out
                return
            timings = r.timings or Timings()
            if spec is not None:
                same_turn = spec.turn_seq == r.turn_seq
                yield self._discard(state, spec, "mismatch" if same_turn and spec.complete else "discarded", msg.corr)
                timings = replace(timings, speculation="discarded") if same_turn else timings
            if not r.text.strip():
                return
            if r.call_id in self.ended:  # hung up; its call_ended is queued behind this transcript
                metrics.ENDED_CALL_SKIPS.labels(self.name, "reply").inc()
                return
            state.last_turn_seq = r.turn_seq
            state.turns += 1
            async for out in self._reply(state, r.turn_seq, r.text, msg.corr, timings):
                yield out
        elif isinstance(r, TurnEvent) and r.kind is TurnEventKind.END_OF_TURN:
            async for out in self._turn_ended(r, msg.corr):
                yield out
        elif isinstance(r, TurnEvent) and r.kind is TurnEventKind.BARGE_IN and r.cancelled_turn_seq is not None:
            state = self.states.get(r.call_id)
            self.interrupt(r.call_id, r.cancelled_turn_seq)
            spec = self.speculations.get(r.call_id)
            if spec is not None and spec.turn_seq <= r.cancelled_turn_seq:  # TTS drops its hold on the CANCEL
                thrown_away(self.speculations.pop(r.call_id), "discarded")
            if state is not None:
                yield Out(self._record(state, r.cancelled_turn_seq, 0, ReplyKind.CANCEL, ""), msg.corr)

    async def _caller_input(self, r: CallEvent, corr: Correlation) -> AsyncIterator[Out]:
        """A key press or a silence from the ingress (README "Silence and the keypad"). The ingress numbers the event
        with a turn_seq after every turn so far and before the caller's next one, so the answer plays in order."""
        state = self.states.get(r.call_id)
        if state is None or state.ended or state.stage == ENDED or r.turn_seq is None or r.call_id in self.ended:
            return
        if r.turn_seq <= max(state.last_turn_seq, int(state.slots.get(INPUT_SEQ_SLOT, "-1"))):
            return  # a replay, or older than the turn already answered
        fixed: list[str] | None = None
        text: str | None = None
        if r.kind is CallEventKind.SILENCE:
            # not a caller turn: turns, last_turn_seq and the engine's history stay as they were
            stage = r.attributes.get("stage", "")
            fixed = policy.let_go(state) if stage == "hangup" else policy.still_there(state) if stage else None
        elif (digit := r.reason or "") == policy.HANDOFF_KEY:
            metrics.KEYPAD.labels("handoff").inc()
            fixed = policy.handoff(state)
        elif (text := policy.key_answer(state, digit)) is not None:
            metrics.KEYPAD.labels(text).inc()
        else:
            metrics.KEYPAD.labels("ignored").inc()
        if fixed is None and text is None:
            return
        state.slots[INPUT_SEQ_SLOT] = str(r.turn_seq)
        if text is not None:  # the key stands for the caller's words: a turn like a spoken one
            state.last_turn_seq = r.turn_seq
            state.turns += 1
        async for out in self._reply(state, r.turn_seq, text, corr.child(r.turn_seq), Timings(), fixed):
            yield out

    async def _speculate(self, r: Transcript, corr: Correlation) -> AsyncIterator[Out]:
        """Answer an early transcript on a copy of the call's state; its sentences go out ``speculative``, held by TTS
        until the FINAL confirms them (``_adopt``). At most one per call: a newer one throws the older away."""
        state = self.states.get(r.call_id)
        if state is None or state.ended or state.stage == ENDED or r.turn_seq <= state.last_turn_seq:
            return
        engine = state.slots.get("engine", self.engine.name)
        if r.call_id in self.ended or not r.text.strip() or not allowed(self.speculate, engine):
            return
        old = self.speculations.pop(r.call_id, None)
        if old is not None:
            if old.turn_seq == r.turn_seq and old.words == normalised(r.text):
                # paused again on the same words: the reply stands, now for this pause
                old.early = r
                self.speculations[r.call_id] = old
                async for out in self._ended_already(old, corr):
                    yield out
                return
            yield self._discard(state, old, "discarded", corr)
        spec = fork(state, r, engine)
        stop = asyncio.Event()
        self.replying[r.call_id] = (r.turn_seq, stop)  # a hang-up stops it as it stops a reply

        async def produce(emit: Callable[[str], None]) -> None:
            async for s in self.engine.respond(spec.state, r.text):
                emit(s)

        try:
            async for sentence in pumped(produce, stop):
                seq = len(spec.sentences)
                yield Out(self._record(spec.state, r.turn_seq, seq, ReplyKind.SPECULATIVE, sentence), corr)
                spec.sentences.append(sentence)
        finally:
            self.replying.pop(r.call_id, None)
        for out in self._notes(spec.state, corr):  # the cost is real whatever becomes of the reply
            if isinstance(out.record, EngineUsage):
                spec.tokens += out.record.llm_tokens_in + out.record.llm_tokens_out
            yield out
        spec.complete = not stop.is_set()
        if spec.complete:
            self.speculations[r.call_id] = spec
        else:
            yield self._discard(state, spec, "discarded", corr)
        logger.info("speculated", extra={"fields": {"turn": r.turn_seq, "sentences": len(spec.sentences),
                                                     "complete": spec.complete}})
        if spec.complete:
            async for out in self._ended_already(spec, corr):
                yield out

    async def _ended_already(self, spec: Speculation, corr: Correlation) -> AsyncIterator[Out]:
        """The turn's END_OF_TURN came before the early transcript ``spec`` answers: judge it now."""
        end = self.turn_ends.get(spec.state.call_id)
        if end is not None and end.turn_seq == spec.turn_seq:
            async for out in self._turn_ended(end, corr):
                yield out

    async def _turn_ended(self, end: TurnEvent, corr: Correlation) -> AsyncIterator[Out]:
        """The END_OF_TURN of a caller turn. If it ended silent after the pause a speculation answered, and that
        pause's early transcript stands for the turn, the speculation is said now, one bus hop after the end of the
        turn, not after STT's final (two hops on). Otherwise the FINAL decides, as for any turn."""
        state = self.states.get(end.call_id)
        if state is None or state.ended or end.turn_seq <= state.last_turn_seq or end.call_id in self.ended:
            return
        spec = self.speculations.get(end.call_id)
        if spec is None or spec.turn_seq != end.turn_seq or spec.early.audio_ms != end.early_audio_ms:
            if end.early_audio_ms is not None:
                self.turn_ends[end.call_id] = end  # the early transcript it names may still be on its way
            return
        self.turn_ends.pop(end.call_id, None)
        if not ends_silent_after(spec, state, end):
            return
        del self.speculations[end.call_id]
        timings = replace(end.timings or Timings(), early_transcript_us=spec.early.ts_us)
        async for out in self._adopt(spec, corr, timings, "end_of_turn"):
            yield out

    def _discard(self, state: DialogState, spec: Speculation, outcome: str, corr: Correlation) -> Out:
        """A speculation that will not be said: counted, and the DISCARD that makes TTS drop what it holds of it."""
        thrown_away(spec, outcome)
        return Out(self._record(state, spec.turn_seq, len(spec.sentences), ReplyKind.DISCARD, ""), corr)

    async def _adopt(self, spec: Speculation, corr: Correlation, timings: Timings, by: str) -> AsyncIterator[Out]:
        """The turn is confirmed with the words the speculation answered (``by`` its END_OF_TURN or its FINAL): its
        state becomes the call's and its sentences are said (same text, same seq), so TTS plays what it holds. The
        reply was made in the silence: ~0 ms of agent."""
        state = spec.state
        self.states[state.call_id] = state
        metrics.SPECULATION.labels("used").inc()
        metrics.SPECULATION_CONFIRMED.labels(by).inc()
        timings = replace(timings, speculation="used")
        async for out in self._sentences(state, spec.turn_seq, corr, timings, now_us(), _each(spec.sentences)):
            yield out
        yield Out(self._record(state, spec.turn_seq, len(spec.sentences), ReplyKind.END, ""), corr)
        heard.remember(state, spec.turn_seq, list(spec.sentences))
        state.updated_us = now_us()
        logger.info("replied", extra={"fields": {"turn": spec.turn_seq, "stage": state.stage, "intent": state.intent,
                                                 "speculative": True, "confirmed_by": by}})
        yield Out(replace(state, slots=dict(state.slots)), corr)

    def _playback(self, r: CallEvent, corr: Correlation) -> list[Out]:
        """What the caller heard of a reply (processors/agent/heard.py). A reply cut off is trimmed to it in the
        dialog state, which is published; a start or an end of playback is only noted (published with the next
        state). The clear may come before the caller's next final transcript (that reply is then made from the
        trimmed history) or after it (the trim then applies to the history of later turns)."""
        state = self.states.get(r.call_id)
        if state is None or state.ended or r.turn_seq is None:
            return []
        if r.kind is CallEventKind.PLAYBACK_STARTED:
            heard.started(state, r.turn_seq)
            return []
        if r.kind is CallEventKind.PLAYBACK_FINISHED:
            heard.finished(state, r.turn_seq)
            return []
        cut = heard.trim(state, r)
        if cut is None:
            return []
        logger.info("reply trimmed to what was heard", extra={"fields": {
            "turn": cut.turn, "heard": cut.heard_sentences, "cut": cut.cut, "unplayed": cut.unplayed}})
        outs: list[Out] = []
        if (spec := self.speculations.pop(r.call_id, None)) is not None:
            outs.append(self._discard(state, spec, "discarded", corr))  # made from words the caller never heard
        state.updated_us = now_us()
        outs.append(Out(replace(state, slots=dict(state.slots)), corr))
        return outs

    def _end(self, call_id: str) -> DialogState | None:
        self.ended.end(call_id)
        self.turn_ends.pop(call_id, None)
        if (spec := self.speculations.pop(call_id, None)) is not None:
            thrown_away(spec, "discarded")  # TTS drops its hold on the call_ended itself
        self.calls.pop(call_id, None)
        return self.states.pop(call_id, None)

    async def on_watched(self, record: TurnEvent | CallEvent) -> None:
        if isinstance(record, CallEvent):
            if record.kind is CallEventKind.CALL_ENDED:
                self.ended.end(record.call_id)
                if self.interrupt(record.call_id, _EVERY_TURN):
                    logger.info("reply stream cancelled by hang-up", extra={"fields": {"call_id": record.call_id}})
            return
        barge_in = record.kind is TurnEventKind.BARGE_IN and record.cancelled_turn_seq is not None
        if barge_in and self.interrupt(record.call_id, record.cancelled_turn_seq):
            logger.info("reply stream cancelled by barge-in", extra={"fields": {"turn": record.cancelled_turn_seq}})

    def interrupt(self, call_id: str, through_turn_seq: int) -> bool:
        """Stop the reply being streamed for ``call_id`` if it answers a turn up to ``through_turn_seq``
        (barge-in). Safe to call from outside ``handle``, e.g. by a runner reading ``turns`` alongside."""
        replying = self.replying.get(call_id)
        if replying is None or replying[0] > through_turn_seq:
            return False
        replying[1].set()
        return True

    def _choices(self, attributes: dict[str, str]) -> dict[str, str]:
        """The call's requested engine (if this deployment has it) and voice."""
        choices = per_call_choices(attributes)
        accepts = getattr(self.engine, "accepts", None)
        if "engine" in choices and not (accepts is not None and accepts(choices["engine"])):
            logger.info("engine not available here", extra={"fields": {"engine": choices.pop("engine")}})
        return choices

    def _record(
        self, state: DialogState, turn_seq: int, seq: int, kind: ReplyKind, text: str, timings: Timings | None = None
    ) -> AgentReply:
        return AgentReply(
            state.call_id,
            turn_seq,
            seq,
            kind,
            text,
            state.reply_partition,
            state.slots.get("engine", self.engine.name),
            now_us(),
            intent=state.intent,
            voice=state.slots.get("voice"),
            end_call=state.stage == ENDED and kind is ReplyKind.END,
            timings=timings,
        )

    async def _reply(
        self,
        state: DialogState,
        turn_seq: int,
        text: str | None,
        corr: Correlation,
        timings: Timings,
        fixed: list[str] | None = None,
    ) -> AsyncIterator[Out]:
        """Stream the engine's greeting (no ``text``) or answer to ``text``; or the ``fixed`` sentences, whatever
        the engine (keypad hand-off, silence prompts)."""
        started = now_us()
        stop = asyncio.Event()
        self.replying[state.call_id] = (turn_seq, stop)

        async def produce(emit: Callable[[str], None]) -> None:
            if fixed is not None:
                for s in fixed:
                    emit(s)
                return
            async for s in self.engine.greet(state) if text is None else self.engine.respond(state, text):
                emit(s)

        seq = 0
        said: list[str] = []  # what the caller may hear of this reply, by seq (processors/agent/heard.py)
        try:
            async for out in self._sentences(state, turn_seq, corr, timings, started, pumped(produce, stop)):
                seq += 1
                said.append(out.record.text if isinstance(out.record, AgentReply) else "")
                yield out
        finally:
            self.replying.pop(state.call_id, None)
        for out in self._notes(state, corr):
            yield out
        if stop.is_set():
            logger.info("reply cancelled", extra={"fields": {"turn": turn_seq, "sentences": seq}})
        else:
            yield Out(self._record(state, turn_seq, seq, ReplyKind.END, ""), corr)
        heard.remember(state, turn_seq, said, dialog=fixed is None)
        state.updated_us = now_us()
        logger.info("replied", extra={"fields": {"turn": turn_seq, "stage": state.stage, "intent": state.intent}})
        yield Out(replace(state, slots=dict(state.slots)), corr)

    async def _sentences(
        self,
        state: DialogState,
        turn_seq: int,
        corr: Correlation,
        timings: Timings,
        started: int,
        sentences: AsyncIterator[str],
    ) -> AsyncIterator[Out]:
        seq = 0
        async for sentence in sentences:
            t = None
            if seq == 0:
                first = now_us()
                engine = state.slots.get("engine", self.engine.name)
                metrics.STAGE_LATENCY.labels("agent", engine).observe((first - started) / 1e6)
                t = replace(timings, agent_started_us=started, agent_first_sentence_us=first)
            yield Out(self._record(state, turn_seq, seq, ReplyKind.SENTENCE, sentence, t), corr)
            seq += 1

    def _notes(self, state: DialogState, corr: Correlation) -> list[Out]:
        """What the engine noted during the reply: usage (priced) and fallbacks, as records."""
        outs: list[Out] = []
        for note in self.journal.drain(state.call_id) if self.journal is not None else ():
            if isinstance(note, Usage):
                outs.append(Out(self.prices.record(state.call_id, note), corr))
            elif isinstance(note, Fallback):
                outs.append(Out(self._fallback_event(state, note), corr))
        return outs

    def _fallback_event(self, state: DialogState, note: Fallback) -> CallEvent:
        start = self.calls.get(state.call_id)
        return CallEvent(
            state.call_id,
            start.session_id if start else "",
            CallEventKind.ENGINE_FALLBACK,
            now_us(),
            start.channel if start else "",
            start.agent_id if start else "",
            state.language,
            start.ingress_node if start else "",
            state.reply_partition,
            turn_seq=state.last_turn_seq,
            reason=f"{note.stage} {note.from_engine} → {note.to_engine}: {note.reason}",
            attributes={"stage": note.stage, "from": note.from_engine, "to": note.to_engine},
        )


def per_call_choices(attributes: dict[str, str]) -> dict[str, str]:
    """Engine and voice a call asked for at call start (``engines``: an agent engine name or
    ``agent=openai,tts=azure``; ``voice``), as dialog-state slots."""
    out: dict[str, str] = {}
    spec = attributes.get("engines", "").strip()
    if spec:
        pairs = dict(p.split("=", 1) for p in spec.split(",") if "=" in p)
        agent = pairs.get("agent", "" if pairs else spec).strip()
        if agent:
            out["engine"] = agent
        if pairs.get("tts") and not attributes.get("voice"):
            out["voice"] = pairs["tts"].strip() + ":"
    if attributes.get("voice"):
        out["voice"] = attributes["voice"].strip()
    return out


async def _each(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item
