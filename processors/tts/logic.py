"""Text-to-speech: reply sentences in, agent audio out to the call's reply partition."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from switchboard import metrics
from switchboard.audio import BUS_RATE, array_to_pcm16
from switchboard.records import AgentReply, AudioOut, AudioOutKind, EngineUsage, ReplyKind, Timings, now_us
from switchboard.runner import Incoming, Out
from switchboard.topics import REPLIES, Topic
from processors.tts.engine import TextToSpeech

logger = logging.getLogger(__name__)


class Synthesizer:
    name = "tts"
    inputs: tuple[Topic, ...] = (REPLIES,)

    def __init__(self, engine: TextToSpeech, chunk_ms: int = 200) -> None:
        self.engine = engine
        self.chunk_samples = BUS_RATE * chunk_ms // 1000
        self.cancelled: dict[str, int] = {}  # call_id → replies up to this turn are cancelled
        self.next_seq: dict[tuple[str, int], int] = {}

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        return None

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        r: AgentReply = msg.record
        key = (r.call_id, r.turn_seq)
        if r.kind is ReplyKind.CANCEL:
            self.cancelled[r.call_id] = max(self.cancelled.get(r.call_id, -1), r.turn_seq)
            self.next_seq.pop(key, None)
            return
        if r.turn_seq <= self.cancelled.get(r.call_id, -1):
            return
        if r.kind is ReplyKind.END:
            seq = self.next_seq.pop(key, 0)
            yield Out(AudioOut(r.call_id, r.turn_seq, seq, AudioOutKind.END, now_us(), BUS_RATE, b"", r.end_call),
                      msg.corr, partition=r.reply_partition)
            if r.end_call:
                self.cancelled.pop(r.call_id, None)
            return
        started = now_us()
        timings = r.timings
        first = True
        async for audio in self.engine.synthesize(r.text, r.voice):
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
                yield Out(AudioOut(r.call_id, r.turn_seq, seq, AudioOutKind.AUDIO, now_us(), BUS_RATE, pcm, False, t),
                          msg.corr, partition=r.reply_partition)
        yield Out(EngineUsage(r.call_id, "tts", self.engine.name, now_us(), turn_seq=r.turn_seq,
                              tts_characters=len(r.text)), msg.corr)
