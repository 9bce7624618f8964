"""Speech-to-text per caller turn: ``speech`` chunks in, ``transcripts`` out.

A turn's stream stays open across input batches; ``commit_floor`` keeps the
offset of its first chunk uncommitted, so if the partition moves to another
worker mid-turn, the new owner replays the whole turn and no turn is lost.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from processors.resilience import Usage
from processors.stt.engine import SpeechToText, SttStream
from processors.usage import PriceTable
from switchboard import metrics
from switchboard.audio import pcm16_to_array
from switchboard.records import SpeechChunk, Timings, Transcript, TranscriptKind, now_us
from switchboard.runner import Incoming, Out
from switchboard.topics import SPEECH, Topic

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Turn:
    turn_seq: int
    stream: SttStream
    partition: int
    first_offset: int
    next_seq: int = 0


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
            for partial in await turn.stream.push(pcm16_to_array(chunk.pcm)):
                yield Out(
                    self._transcript(chunk, partial.text, TranscriptKind.PARTIAL, partial.audio_ms, None), msg.corr
                )
        if not chunk.final:
            return
        del self.turns[chunk.call_id]
        started = now_us()
        result = await turn.stream.finish()
        finished = now_us()
        metrics.STAGE_LATENCY.labels("stt", self.engine.name).observe((finished - started) / 1e6)
        timings = replace(chunk.timings or Timings(), stt_started_us=started, stt_finished_us=finished)
        logger.info("transcribed", extra={"fields": {"turn": chunk.turn_seq, "ms": (finished - started) // 1000}})
        yield Out(
            self._transcript(chunk, result.text, TranscriptKind.FINAL, result.audio_ms, timings, result.confidence),
            msg.corr,
        )
        usage = Usage("stt", self.engine.name, chunk.turn_seq, stt_audio_seconds=result.audio_ms / 1000)
        yield Out(self.prices.record(chunk.call_id, usage), msg.corr)

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
