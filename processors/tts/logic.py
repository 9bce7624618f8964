"""Text-to-speech: reply sentences in, agent audio out to the call's reply partition.

Also reads ``calls`` (co-partitioned, same key) and watches it: once a call has ended, its
queued sentences are skipped and a synthesis in progress is cut short (a job still waiting in
the inference pool is dropped), so a caller who hung up costs no more synthesis. It watches ``replies`` too: a
barge-in's CANCEL, queued behind the sentence being made, cuts that sentence short the same way (with the first
clause cut, the rest of a sentence is never made once the caller has barged in).

When a call starts, its filler phrase goes to its reply partition (``AudioOut`` kind ``filler``), from the phrase
cache: the ingress keeps it and plays it only when a reply is late (ingress/filler.py).

A reply's audio is numbered so that a replay repeats the numbers: chunk i of sentence s is ``s × SEQ_STRIDE + i``,
and its END is ``n × SEQ_STRIDE`` (n sentences). A restarted worker re-emits what it had not committed with the
same (turn_seq, seq), and the ingress drops what it already has: ENDs and audio are idempotent.

Speculative sentences (made by the agent on the early transcript) are synthesised into the call's hold
(processors/tts/hold.py) and nothing is published; the same sentence confirmed (SENTENCE, same turn, seq and text)
sends the held audio at once, and a DISCARD, a CANCEL or a hang-up drops it unheard. A DISCARD seen by the watcher cuts
the speculative sentence being made and skips the queued ones it covers (those of its turn published before it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace

import numpy as np
from prometheus_client import Counter

from processors.resilience import Fallback, Usage
from processors.tts.engine import TextToSpeech
from processors.tts.hold import Hold
from processors.tts.phrase_cache import FILLER_PHRASE
from processors.usage import PriceTable
from switchboard import metrics
from switchboard.audio import BUS_RATE, array_to_pcm16
from switchboard.bus import Correlation
from switchboard.ended import EndedCalls
from switchboard.records import AgentReply, AudioOut, AudioOutKind, CallEvent, CallEventKind, ReplyKind, Timings, now_us
from switchboard.runner import Incoming, Out
from switchboard.topics import CALLS, REPLIES, Topic

logger = logging.getLogger(__name__)
SEQ_STRIDE = 10_000  # audio.out seq numbers per reply sentence (200 ms chunks: 33 minutes of one sentence)
FILLER_TURN = -1  # turn_seq of a filler record: it answers no turn
BARGE_IN_CUTS = Counter(
    "switchboard_tts_barge_in_cuts_total", "sentences whose synthesis a barge-in's CANCEL cut short (rest not made)"
)


class Synthesizer:
    name = "tts"
    inputs: tuple[Topic, ...] = (REPLIES, CALLS)
    # a hang-up, or a barge-in's CANCEL, must stop synthesis already under way (e.g. between a sentence's two parts)
    watch: tuple[Topic, ...] = (CALLS, REPLIES)

    def __init__(
        self, engine: TextToSpeech, chunk_ms: int = 200, prices: PriceTable | None = None, hold: Hold | None = None
    ) -> None:
        self.engine = engine
        self.prices = prices or PriceTable()
        self.chunk_samples = BUS_RATE * chunk_ms // 1000
        self.cancelled: dict[str, int] = {}  # call_id → replies up to this turn are cancelled
        self.next_seq: dict[tuple[str, int], int] = {}
        self.ended = EndedCalls()
        self.barged = EndedCalls()  # "call_id/turn_seq" of sentences a CANCEL stopped while they were being made
        self.speaking: dict[str, int] = {}  # call_id → turn_seq of the sentence being made
        self.filler_pcm: bytes | None = None  # the filler phrase, synthesised (or taken from the cache) once
        self.hold = hold or Hold()  # speculative audio until confirmed or discarded
        self.discarded: dict[str, tuple[int, int]] = {}  # call_id → (turn_seq, ts_us) of its latest DISCARD
        self.speculating: dict[str, tuple[int, int]] = {}  # call_id → (turn_seq, spec ts_us) of the one being made
        self.unheld = EndedCalls(limit=10_000, ttl_s=600.0)  # "call_id/turn/ts" of speculations a DISCARD cut

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        return None

    async def on_watched(self, record: object) -> None:
        if isinstance(record, CallEvent) and record.kind is CallEventKind.CALL_ENDED:
            self.ended.end(record.call_id)
        elif isinstance(record, AgentReply) and record.kind is ReplyKind.CANCEL:
            self._cancel(record.call_id, record.turn_seq)
        elif isinstance(record, AgentReply) and record.kind is ReplyKind.DISCARD:
            self._discard(record)

    def _discard(self, r: AgentReply) -> None:
        """The speculation of turn ``r.turn_seq`` published before ``r`` will not be said: cut the sentence of it
        being made; its queued sentences are skipped (``_discarded``)."""
        prev = self.discarded.get(r.call_id)
        if prev is None or (r.turn_seq, r.ts_us) > prev:
            self.discarded[r.call_id] = (r.turn_seq, r.ts_us)
        making = self.speculating.get(r.call_id)
        if making is not None and making[0] <= r.turn_seq and making[1] <= r.ts_us:
            self.unheld.end(f"{r.call_id}/{making[0]}/{making[1]}")

    def _discarded(self, r: AgentReply, spec_us: int) -> bool:
        d = self.discarded.get(r.call_id)
        return d is not None and r.turn_seq <= d[0] and spec_us <= d[1]

    def _cancel(self, call_id: str, turn_seq: int) -> None:
        """Replies up to ``turn_seq`` are not spoken: queued sentences are skipped, the one being made is cut."""
        self.cancelled[call_id] = max(self.cancelled.get(call_id, -1), turn_seq)
        speaking = self.speaking.get(call_id)
        if speaking is not None and speaking <= turn_seq:
            self.barged.end(f"{call_id}/{speaking}")

    def _call_ended(self, call_id: str) -> None:
        self.ended.end(call_id)
        self.cancelled.pop(call_id, None)
        self.hold.drop(call_id)
        self.discarded.pop(call_id, None)
        for key in [k for k in self.next_seq if k[0] == call_id]:
            del self.next_seq[key]
        if hasattr(self.engine, "call_ended"):
            self.engine.call_ended(call_id)

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        if isinstance(msg.record, CallEvent):
            if msg.record.kind is CallEventKind.CALL_ENDED:
                self._call_ended(msg.record.call_id)
            elif msg.record.kind is CallEventKind.CALL_STARTED and msg.record.call_id not in self.ended:
                filler = await self._filler()
                if filler:
                    out = AudioOut(msg.record.call_id, FILLER_TURN, 0, AudioOutKind.FILLER, now_us(), BUS_RATE, filler)
                    yield Out(out, msg.corr, partition=msg.record.reply_partition)
            return
        r: AgentReply = msg.record
        key = (r.call_id, r.turn_seq)
        if r.call_id in self.ended:
            if r.kind is ReplyKind.SENTENCE:
                metrics.ENDED_CALL_SKIPS.labels(self.name, "sentence").inc()
            return
        if r.kind is ReplyKind.CANCEL:
            self._cancel(r.call_id, r.turn_seq)
            self.next_seq.pop(key, None)
            self.hold.drop(r.call_id, r.turn_seq)
            return
        if r.kind is ReplyKind.DISCARD:
            self._discard(r)
            self.hold.drop(r.call_id, r.turn_seq)
            return
        if r.turn_seq <= self.cancelled.get(r.call_id, -1):
            return
        if r.kind is ReplyKind.SPECULATIVE:
            async for out in self._speculate(r, msg.corr):
                yield out
            return
        if r.kind is ReplyKind.END:
            seq = max(self.next_seq.pop(key, 0), r.seq * SEQ_STRIDE)  # the same number on a replay
            yield Out(
                AudioOut(r.call_id, r.turn_seq, seq, AudioOutKind.END, now_us(), BUS_RATE, b"", r.end_call),
                msg.corr,
                partition=r.reply_partition,
            )
            self.hold.drop(r.call_id, r.turn_seq)  # the reply is over: nothing of it stays held
            if r.end_call:
                self.cancelled.pop(r.call_id, None)
                if hasattr(self.engine, "call_ended"):
                    self.engine.call_ended(r.call_id)
            return
        held = self.hold.take(r.call_id, r.turn_seq, r.seq, r.text)
        # a held sentence may have waited (in the call's order) for its speculative synthesis to end: counted as TTS
        # time from when the agent confirmed it, so the wait is not taken for bus overhead
        started = now_us() if held is None else min(now_us(), max(r.ts_us, 0) or now_us())
        # An engine may yield a sentence in parts (FirstClauseTts): the first chunk of the first part is the first
        # audio; a CANCEL or hang-up after a part stops the next from being made. A sentence held from a speculation
        # has its first part made already (out at once) and its stream resumed for the rest.
        source = self._synthesize(r) if held is None else _resumed(held.parts, held.rest)
        self.speaking[r.call_id] = r.turn_seq
        speech = self.barged.until_ended(f"{r.call_id}/{r.turn_seq}", source)
        async for out in self._audio(r, msg.corr, self.ended.until_ended(r.call_id, speech), started):
            yield out
        self.speaking.pop(r.call_id, None)
        if r.call_id in self.ended:  # hung up while this sentence was being made: the rest was never made
            metrics.ENDED_CALL_SKIPS.labels(self.name, "synthesis_cut").inc()
        elif f"{r.call_id}/{r.turn_seq}" in self.barged:  # barged into: likewise
            BARGE_IN_CUTS.inc()
        for out in self._notes(r, msg.corr):
            yield out

    def _synthesize(self, r: AgentReply) -> AsyncIterator[np.ndarray]:
        # a call-aware engine (cloud voice with fallback) keeps a call on the offline voice after a failure
        call_aware = getattr(self.engine, "synthesize_call", None)
        return call_aware(r.call_id, r.text, r.voice) if call_aware else self.engine.synthesize(r.text, r.voice)

    async def _speculate(self, r: AgentReply, corr: Correlation) -> AsyncIterator[Out]:
        """The first part of a speculation's first sentence, made into the call's hold with the engine's stream left
        open for the rest (processors/tts/hold.py says why no more); nothing goes to audio.out."""
        if r.seq != 0:
            return  # made once confirmed, while the first sentence plays
        if self._discarded(r, r.ts_us):
            return  # its DISCARD is already known (the watcher saw it): not worth making
        self.hold.begin(r.call_id, r.turn_seq, r.ts_us)
        name = f"{r.call_id}/{r.turn_seq}/{r.ts_us}"
        self.speculating[r.call_id] = (r.turn_seq, r.ts_us)
        stream = self._synthesize(r)
        try:
            speech = self.unheld.until_ended(name, _first(stream))
            parts = [audio async for audio in self.ended.until_ended(r.call_id, speech)]
        finally:
            self.speculating.pop(r.call_id, None)
        if name in self.unheld or r.call_id in self.ended or not parts:
            self.hold.drop(r.call_id, r.turn_seq)  # cut short: what was made of it is never said
        else:
            self.hold.put(r.call_id, r.seq, r.text, parts, stream)
        if getattr(self.engine, "journal", None) is not None:  # a cloud voice: paid for whatever becomes of it
            for out in self._notes(r, corr):
                yield out

    async def _audio(
        self, r: AgentReply, corr: Correlation, speech: AsyncIterator[np.ndarray], started: int
    ) -> AsyncIterator[Out]:
        """A sentence's audio as numbered ``audio.out`` chunks; the first carries the turn's timings."""
        key = (r.call_id, r.turn_seq)
        timings = r.timings
        first = True
        self.next_seq[key] = max(self.next_seq.get(key, 0), r.seq * SEQ_STRIDE)
        async for audio in speech:
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
                    corr,
                    partition=r.reply_partition,
                )

    def _notes(self, r: AgentReply, corr: Correlation) -> list[Out]:
        """What the engine noted while making ``r``: usage (priced) and fallbacks, as records."""
        outs: list[Out] = []
        journal = getattr(self.engine, "journal", None)
        notes = (
            journal.drain(r.call_id)
            if journal is not None
            else [Usage("tts", self.engine.name, tts_characters=len(r.text))]
        )
        for note in notes:
            if isinstance(note, Usage):
                outs.append(Out(self.prices.record(r.call_id, replace(note, turn_seq=r.turn_seq)), corr))
            elif isinstance(note, Fallback):
                outs.append(Out(
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
                    corr,
                ))
        return outs

    async def _filler(self) -> bytes:
        """The filler phrase as PCM16, made once per process (a cache hit where the phrase cache is on); empty if the
        engine fails: a call without a filler only loses the filler."""
        if self.filler_pcm is None:
            try:
                parts = [audio async for audio in self.engine.synthesize(FILLER_PHRASE, None)]
            except Exception as exc:
                logger.warning("filler phrase not synthesised", extra={"fields": {"error": repr(exc)}})
                return b""
            audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
            loud = np.flatnonzero(np.abs(audio) > 500)  # -36 dBFS
            # without the voice's lead-in and trailing silence: a reply that comes while the filler plays waits for it
            trimmed = audio[max(0, loud[0] - BUS_RATE // 50) : loud[-1] + BUS_RATE // 10] if len(loud) else audio
            self.filler_pcm = array_to_pcm16(trimmed)
        return self.filler_pcm


async def _first(stream: AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
    """The first part of ``stream``, which stays open (suspended) for the rest."""
    try:
        yield await anext(stream)
    except StopAsyncIteration:
        return


async def _resumed(made: Iterable[np.ndarray], rest: AsyncIterator[np.ndarray] | None) -> AsyncIterator[np.ndarray]:
    """A held sentence: the parts made already, then the rest of its stream."""
    for part in made:
        yield part
    if rest is not None:
        async for part in rest:
            yield part
