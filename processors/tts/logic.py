"""Text-to-speech: reply sentences in, agent audio out to the call's reply partition.

Also reads ``calls`` (co-partitioned, same key) and watches it: once a call has ended, its
queued sentences are skipped and a synthesis in progress is cut short (a job still waiting in
the inference pool is dropped), so a caller who hung up costs no more synthesis.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from processors.resilience import Fallback, Usage
from processors.tts.engine import TextToSpeech
from processors.usage import PriceTable
from switchboard import metrics
from switchboard.audio import BUS_RATE, array_to_pcm16
from switchboard.ended import EndedCalls
from switchboard.records import AgentReply, AudioOut, AudioOutKind, CallEvent, CallEventKind, ReplyKind, Timings, now_us
from switchboard.runner import Incoming, Out
from switchboard.topics import CALLS, REPLIES, Topic

logger = logging.getLogger(__name__)


class Synthesizer:
    name = "tts"
    inputs: tuple[Topic, ...] = (REPLIES, CALLS)
    watch: tuple[Topic, ...] = (CALLS,)  # a hang-up must stop synthesis already under way

    def __init__(self, engine: TextToSpeech, chunk_ms: int = 200, prices: PriceTable | None = None) -> None:
        self.engine = engine
        self.prices = prices or PriceTable()
        self.chunk_samples = BUS_RATE * chunk_ms // 1000
        self.cancelled: dict[str, int] = {}  # call_id → replies up to this turn are cancelled
        self.next_seq: dict[tuple[str, int], int] = {}
        self.ended = EndedCalls()

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        return None

    async def on_watched(self, record: object) -> None:
        if isinstance(record, CallEvent) and record.kind is CallEventKind.CALL_ENDED:
            self.ended.end(record.call_id)

    def _call_ended(self, call_id: str) -> None:
        self.ended.end(call_id)
        self.cancelled.pop(call_id, None)
        for key in [k for k in self.next_seq if k[0] == call_id]:
            del self.next_seq[key]
        if hasattr(self.engine, "call_ended"):
            self.engine.call_ended(call_id)

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        if isinstance(msg.record, CallEvent):
            if msg.record.kind is CallEventKind.CALL_ENDED:
                self._call_ended(msg.record.call_id)
            return
        r: AgentReply = msg.record
        key = (r.call_id, r.turn_seq)
        if r.call_id in self.ended:
            if r.kind is ReplyKind.SENTENCE:
                metrics.ENDED_CALL_SKIPS.labels(self.name, "sentence").inc()
            return
        if r.kind is ReplyKind.CANCEL:
            self.cancelled[r.call_id] = max(self.cancelled.get(r.call_id, -1), r.turn_seq)
            self.next_seq.pop(key, None)
            return
        if r.turn_seq <= self.cancelled.get(r.call_id, -1):
            return
        if r.kind is ReplyKind.END:
            seq = self.next_seq.pop(key, 0)
            yield Out(
                AudioOut(r.call_id, r.turn_seq, seq, AudioOutKind.END, now_us(), BUS_RATE, b"", r.end_call),
                msg.corr,
                partition=r.reply_partition,
            )
            if r.end_call:
                self.cancelled.pop(r.call_id, None)
                if hasattr(self.engine, "call_ended"):
                    self.engine.call_ended(r.call_id)
            return
        started = now_us()
        timings = r.timings
        first = True
        # a call-aware engine (cloud voice with fallback) keeps a call on the offline voice after a failure
        call_aware = getattr(self.engine, "synthesize_call", None)
        speech = call_aware(r.call_id, r.text, r.voice) if call_aware else self.engine.synthesize(r.text, r.voice)
        async for audio in self.ended.until_ended(r.call_id, speech):
            for i in range(0, len(audio), self.chunk_samples):
                t: Timings | None = None
                if first and timings is not None:
                    ready = now_us()
                    metrics.STAGE_LATENCY.labels("tts", self.engine.name).observe((ready - started) / 1e6)
                    t = replace(timings, tts_started_us=started, tts_first_audio_us=ready)
                first = False
                seq = self.next_seq.get(key, 0)
                self.next_seq[key] = seq + 1
                pcm = array_to_pcm16(audio[i : i + self.chunk_samples])
                yield Out(
                    AudioOut(r.call_id, r.turn_seq, seq, AudioOutKind.AUDIO, now_us(), BUS_RATE, pcm, False, t),
                    msg.corr,
                    partition=r.reply_partition,
                )
        if r.call_id in self.ended:  # hung up while this sentence was being made: the rest was never made
            metrics.ENDED_CALL_SKIPS.labels(self.name, "synthesis_cut").inc()
        journal = getattr(self.engine, "journal", None)
        notes = (
            journal.drain(r.call_id)
            if journal is not None
            else [Usage("tts", self.engine.name, tts_characters=len(r.text))]
        )
        for note in notes:
            if isinstance(note, Usage):
                yield Out(self.prices.record(r.call_id, replace(note, turn_seq=r.turn_seq)), msg.corr)
            elif isinstance(note, Fallback):
                yield Out(
                    CallEvent(
                        r.call_id,
                        "",
                        CallEventKind.ENGINE_FALLBACK,
                        now_us(),
                        "",
                        "",
                        "",
                        "",
                        r.reply_partition,
                        turn_seq=r.turn_seq,
                        reason=f"tts {note.from_engine} → {note.to_engine}: {note.reason}",
                        attributes={"stage": "tts", "from": note.from_engine, "to": note.to_engine},
                    ),
                    msg.corr,
                )
