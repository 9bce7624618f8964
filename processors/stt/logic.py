"""Speech-to-text per caller turn: ``speech`` chunks in, ``transcripts`` out.

A turn's stream stays open across input batches; ``commit_floor`` keeps the
offset of its first chunk uncommitted, so if the partition moves to another
worker mid-turn, the new owner replays the whole turn and no turn is lost.

Early transcripts: a chunk marked ``pause`` (the turns processor heard ``pause_ms`` of silence)
has the turn so far decoded at once, on the inference pool, and published as an ``early``
transcript whose ``audio_ms`` names the pause (the turns processor judges the end of the turn
with it; the agent and the sink ignore it). The stream stays open. If the final chunk says no
voiced audio came after that pause (``silent_since_pause``), the early result is the turn's
final transcript and nothing is decoded again, so the final is out as soon as the turn ends;
otherwise (the caller went on) it is dropped and the turn is decoded whole, as before.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from processors.resilience import Usage
from processors.stt.engine import SpeechToText, SttResult, SttStream
from processors.usage import PriceTable
from switchboard import metrics
from switchboard.audio import pcm16_to_array
from switchboard.records import SpeechChunk, Timings, Transcript, TranscriptKind, now_us
from switchboard.runner import Incoming, Out
from switchboard.topics import SPEECH, Topic

BACKCHANNEL = "backchannel"  # the end reason of a turn spoken over the agent that takes no turn (processors/turns)

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Turn:
    turn_seq: int
    stream: SttStream
    partition: int
    first_offset: int
    next_seq: int = 0
    samples: int = 0  # audio received so far: an early transcript's audio_ms names its pause by it
    early: SttResult | None = None  # the latest pause's early result, while it may stand in for the final
    early_us: int | None = None  # when it was ready
    decoded_us: int = 0  # when the last early decode ended (whether or not it may stand in for the final)


class Transcriber:
    name = "stt"
    inputs: tuple[Topic, ...] = (SPEECH,)

    def __init__(
        self, engine: SpeechToText, prices: PriceTable | None = None, redact: Callable[[str], str] | None = None
    ) -> None:
        self.engine = engine
        # SWITCHBOARD_REDACT_TRANSCRIPTS: PII is masked before the text is published, so no consumer of
        # the transcripts topic (agent, sink, anyone with read access) ever holds it
        self.redact = redact
        self.prices = prices or PriceTable()
        self.turns: dict[str, _Turn] = {}  # call_id → its open turn

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        for call_id, turn in list(self.turns.items()):
            if turn.partition in partitions:
                await turn.stream.cancel()
                del self.turns[call_id]

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        floors = [t.first_offset for t in self.turns.values() if t.partition == partition]
        return min(floors) if floors else None

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        chunk: SpeechChunk = msg.record
        turn = self.turns.get(chunk.call_id)
        if chunk.seq == 0 or turn is None or turn.turn_seq != chunk.turn_seq:
            if turn is not None:
                await turn.stream.cancel()  # replaced: a replay, or a turn whose final never came
            if chunk.seq != 0:
                # its first chunks were handled (and committed) elsewhere; nothing to recognise
                logger.warning("chunk of a turn that started elsewhere", extra={"fields": {"turn": chunk.turn_seq}})
                self.turns.pop(chunk.call_id, None)
                return
            turn = _Turn(chunk.turn_seq, self.engine.open(chunk.language, chunk.sample_rate), msg.partition, msg.offset)
            self.turns[chunk.call_id] = turn
        if chunk.seq < turn.next_seq:
            return  # duplicate delivery
        turn.next_seq = chunk.seq + 1
        if chunk.pcm:
            samples = pcm16_to_array(chunk.pcm)
            turn.samples += len(samples)
            for partial in await turn.stream.push(samples):
                yield Out(
                    self._transcript(chunk, partial.text, TranscriptKind.PARTIAL, partial.audio_ms, None), msg.corr
                )
        if chunk.pause and not chunk.final:
            early = await self._early(chunk, turn)
            if early is not None:
                yield Out(early, msg.corr)
            return
        if not chunk.final:
            return
        del self.turns[chunk.call_id]
        if chunk.timings is not None and chunk.timings.end_reason == BACKCHANNEL:
            # "uh-huh" over the agent (processors/turns): no turn for the agent to answer, only a stream to close
            await turn.stream.cancel()
            metrics.STT_FINALS.labels(self.engine.name, BACKCHANNEL).inc()
            return
        started = now_us()
        extra: dict[str, int | None] = {}
        if chunk.silent_since_pause and turn.early is not None:
            # nothing voiced since the pause: its early decode is the whole turn's transcript
            result = SttResult(turn.early.text, True, turn.samples * 1000 // chunk.sample_rate, turn.early.language,
                               turn.early.confidence)
            await turn.stream.cancel()
            finished = max(now_us(), started + 1)
            extra["early_transcript_us"] = turn.early_us
            metrics.STT_FINALS.labels(self.engine.name, "early").inc()
        else:
            result = await turn.stream.finish()
            finished = now_us()
            metrics.STT_FINALS.labels(self.engine.name, "decoded").inc()
        if turn.decoded_us > chunk.ts_us:
            # An early decode was still running when the turn ended, and its pause chunk's handler held this final
            # back: the caller waited for STT from the end of the turn (the final chunk's ts), not from now.
            started = min(started, chunk.ts_us + 1)
        metrics.STAGE_LATENCY.labels("stt", self.engine.name).observe((finished - started) / 1e6)
        timings = replace(chunk.timings or Timings(), stt_started_us=started, stt_finished_us=finished, **extra)
        logger.info("transcribed", extra={"fields": {"turn": chunk.turn_seq, "ms": (finished - started) // 1000,
                                                     "early": "early_transcript_us" in extra}})
        yield Out(
            self._transcript(chunk, result.text, TranscriptKind.FINAL, result.audio_ms, timings, result.confidence),
            msg.corr,
        )
        usage = Usage("stt", self.engine.name, chunk.turn_seq, stt_audio_seconds=result.audio_ms / 1000)
        yield Out(self.prices.record(chunk.call_id, usage), msg.corr)

    async def _early(self, chunk: SpeechChunk, turn: _Turn) -> Transcript | None:
        """The turn so far decoded at a pause, as an ``early`` transcript naming the pause by its audio_ms."""
        turn.early = turn.early_us = None  # a new pause: the previous one's result is stale
        early = getattr(turn.stream, "early", None)
        if early is None:
            return None  # an engine (or wrapper) without early results: the turns processor falls back to timing
        started = now_us()
        result: SttResult = await early()
        ready = turn.decoded_us = now_us()
        metrics.EARLY_TRANSCRIPT.labels(self.engine.name).observe((ready - started) / 1e6)
        logger.debug("early transcript", extra={"fields": {"turn": chunk.turn_seq, "ms": (ready - started) // 1000,
                                                           "since_chunk_ms": (ready - chunk.ts_us) // 1000}})
        if result.final:  # a whole-turn decode: it may stand in for the final if the caller says no more
            turn.early, turn.early_us = result, ready
        audio_ms = turn.samples * 1000 // chunk.sample_rate
        early_transcript = self._transcript(chunk, result.text, TranscriptKind.EARLY, audio_ms, None, result.confidence)
        early_transcript.stands_for_turn = result.final
        return early_transcript

    def _transcript(
        self,
        chunk: SpeechChunk,
        text: str,
        kind: TranscriptKind,
        audio_ms: int,
        timings: Timings | None,
        confidence: float | None = None,
    ) -> Transcript:
        return Transcript(
            chunk.call_id,
            chunk.turn_seq,
            kind,
            self.redact(text) if self.redact else text,
            chunk.language,
            audio_ms,
            self.engine.name,
            now_us(),
            confidence,
            timings,
        )
