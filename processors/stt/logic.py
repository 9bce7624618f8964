"""Speech-to-text per caller turn: ``speech`` chunks in, ``transcripts`` out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from switchboard import metrics
from switchboard.audio import pcm16_to_array
from switchboard.records import EngineUsage, SpeechChunk, Timings, Transcript, TranscriptKind, now_us
from switchboard.runner import Incoming, Out
from switchboard.topics import SPEECH, Topic
from processors.stt.engine import SpeechToText, SttStream

logger = logging.getLogger(__name__)


class Transcriber:
    name = "stt"
    inputs: tuple[Topic, ...] = (SPEECH,)

    def __init__(self, engine: SpeechToText) -> None:
        self.engine = engine
        self.streams: dict[str, tuple[int, SttStream]] = {}  # call_id → (turn_seq, stream)

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        for _, stream in self.streams.values():
            await stream.cancel()
        self.streams.clear()

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        chunk: SpeechChunk = msg.record
        current = self.streams.get(chunk.call_id)
        if current is None or current[0] != chunk.turn_seq:
            if current is not None:
                await current[1].cancel()  # a turn whose final never came
            if chunk.final and chunk.seq != 0:
                # the turn began on another worker (rebalance); its audio is gone from here
                logger.warning("final chunk of an unknown turn", extra={"fields": {"turn": chunk.turn_seq}})
            current = (chunk.turn_seq, self.engine.open(chunk.language, chunk.sample_rate))
            self.streams[chunk.call_id] = current
        stream = current[1]
        if chunk.pcm:
            for partial in await stream.push(pcm16_to_array(chunk.pcm)):
                yield Out(self._transcript(chunk, partial.text, TranscriptKind.PARTIAL, partial.audio_ms, None), msg.corr)
        if not chunk.final:
            return
        del self.streams[chunk.call_id]
        started = now_us()
        result = await stream.finish()
        finished = now_us()
        metrics.STAGE_LATENCY.labels("stt", self.engine.name).observe((finished - started) / 1e6)
        timings = replace(chunk.timings or Timings(), stt_started_us=started, stt_finished_us=finished)
        logger.info("transcribed", extra={"fields": {"turn": chunk.turn_seq, "ms": (finished - started) // 1000}})
        yield Out(self._transcript(chunk, result.text, TranscriptKind.FINAL, result.audio_ms, timings, result.confidence),
                  msg.corr)
        yield Out(EngineUsage(chunk.call_id, "stt", self.engine.name, finished, turn_seq=chunk.turn_seq,
                              stt_audio_seconds=result.audio_ms / 1000), msg.corr)

    def _transcript(self, chunk: SpeechChunk, text: str, kind: TranscriptKind, audio_ms: int,
                    timings: Timings | None, confidence: float | None = None) -> Transcript:
        return Transcript(chunk.call_id, chunk.turn_seq, kind, text, chunk.language, audio_ms, self.engine.name,
                          now_us(), confidence, timings)
