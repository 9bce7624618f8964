"""Turn-taking per call: speech onset, end of turn, barge-in.

Inputs: ``audio.in`` (caller frames; each says which reply partition the
caller's ingress node reads and which agent reply it is playing right now) and
``calls`` (call start/end). Outputs: ``turns`` events, the turn's audio on
``speech`` for STT, ``playback`` clear commands on barge-in, and a
``call_ended`` (reason ``ingress_lost``) for calls whose audio stopped without
an end, as when an ingress node dies.

A turn's ID is the call's frame number at speech onset, so it is the same
whichever worker detects it: after a rebalance the new owner replays from the
open turn's first frame (``commit_floor``) and reaches the same IDs.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from processors.turns.settings import TurnsSettings
from processors.turns.vad import VoiceActivity
from switchboard import metrics
from switchboard.audio import pcm16_to_array
from switchboard.bus import Correlation
from switchboard.records import (
    AudioFrame,
    CallEvent,
    CallEventKind,
    PlaybackCommand,
    PlaybackKind,
    SpeechChunk,
    Timings,
    TurnEvent,
    TurnEventKind,
    now_us,
)
from switchboard.runner import Incoming, Out
from switchboard.topics import AUDIO_IN, CALLS, Topic

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Frame:
    frame: AudioFrame
    offset: int
    voiced: bool


@dataclass(slots=True)
class _Call:
    vad: VoiceActivity
    partition: int
    language: str = "en-US"
    started: CallEvent | None = None
    turn_seq: int = 0
    in_speech: bool = False
    onset_run: int = 0  # consecutive voiced frames before onset
    voiced_ms: int = 0  # in the current turn
    silence_ms: int = 0
    turn_ms: int = 0
    speech_start_us: int = 0
    last_voiced_us: int = 0
    last_frame_us: int = 0
    chunk_seq: int = 0
    barged: bool = False
    floor: int = 0  # first audio.in offset this call still needs
    preroll: deque[_Frame] = field(default_factory=deque)


class TurnDetector:
    name = "turns"
    inputs: tuple[Topic, ...] = (AUDIO_IN, CALLS)

    def __init__(self, settings: TurnsSettings, vad_factory: Callable[[], VoiceActivity]) -> None:
        self.s = settings
        self.vad_factory = vad_factory
        self.calls: dict[str, _Call] = {}
        self._last_sweep_us = 0
        # per partition: newest frame timestamp handled, and when (monotonic s); see _sweep
        self._clock: dict[int, tuple[int, float]] = {}

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        self.calls = {k: c for k, c in self.calls.items() if c.partition not in partitions}
        self._clock = {p: t for p, t in self._clock.items() if p not in partitions}

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        if topic is not AUDIO_IN:
            return None
        floors = [c.floor for c in self.calls.values() if c.partition == partition]
        return min(floors) if floors else None

    def _call(self, call_id: str, partition: int) -> _Call:
        if call_id not in self.calls:
            self.calls[call_id] = _Call(vad=self.vad_factory(), partition=partition)
        return self.calls[call_id]

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        record = msg.record
        if isinstance(record, CallEvent):
            if record.kind is CallEventKind.CALL_ENDED:
                self.calls.pop(record.call_id, None)
            elif record.kind is CallEventKind.CALL_STARTED:
                c = self._call(record.call_id, msg.partition)
                c.started, c.language = record, record.language
            return
        if isinstance(record, AudioFrame):
            newest = max(record.ts_us, self._clock.get(msg.partition, (0, 0.0))[0])
            self._clock[msg.partition] = (newest, time.monotonic())
            for out in self._frame(record, msg.offset, msg.partition, msg.corr):
                yield out
            for out in self._sweep(record.ts_us):
                yield out

    def _sweep(self, now: int) -> list[Out]:
        """Calls whose audio stopped with no call_ended: their ingress node is gone."""
        if now - self._last_sweep_us < 1_000_000:
            return []
        self._last_sweep_us = now
        timeout_us = self.s.call_idle_timeout_ms * 1000
        outs = []
        for call_id, c in list(self.calls.items()):
            # A call is judged by the newest frame of its own partition, not by ``now`` (another
            # call's frame): calls are handled concurrently, and a partition replayed after a
            # rebalance runs behind live ones, so a foreign clock would end its calls early. A
            # partition with no frame handled for the whole timeout is judged by ``now``.
            newest, seen = self._clock.get(c.partition, (now, 0.0))
            if time.monotonic() - seen > timeout_us / 1e6:
                newest = now
            if c.last_frame_us and c.last_frame_us < newest - timeout_us:
                del self.calls[call_id]
                if c.started is not None:
                    logger.warning("call lost its ingress", extra={"fields": {"call_id": call_id}})
                    ended = replace(c.started, kind=CallEventKind.CALL_ENDED, ts_us=now_us(), reason="ingress_lost")
                    outs.append(
                        Out(
                            ended,
                            Correlation(call_id=call_id, session_id=c.started.session_id, agent_id=c.started.agent_id),
                        )
                    )
        return outs

    def _chunk(self, c: _Call, frame: AudioFrame, corr: Correlation) -> Out:
        chunk = SpeechChunk(
            frame.call_id, c.turn_seq, c.chunk_seq, now_us(), frame.sample_rate, frame.pcm, False, c.language
        )
        c.chunk_seq += 1
        return Out(chunk, corr)

    def _frame(self, frame: AudioFrame, offset: int, partition: int, in_corr: Correlation) -> list[Out]:
        c = self._call(frame.call_id, partition)
        c.last_frame_us = frame.ts_us
        samples = pcm16_to_array(frame.pcm)
        frame_ms = len(samples) * 1000 // frame.sample_rate
        # one decision per VAD frame the record completes; a longer record is voiced if most of them are
        decisions = c.vad.process(samples, frame.sample_rate)
        voiced = sum(decisions) * 2 > len(decisions)
        outs: list[Out] = []
        if not c.in_speech:
            c.preroll.append(_Frame(frame, offset, voiced))
            while len(c.preroll) * frame_ms > max(self.s.preroll_ms, self.s.speech_start_ms):
                c.preroll.popleft()
            c.floor = c.preroll[0].offset
            c.onset_run = c.onset_run + 1 if voiced else 0
            if c.onset_run * frame_ms < self.s.speech_start_ms:
                return outs
            first_voiced = c.preroll[-c.onset_run].frame
            c.turn_seq = first_voiced.seq + 1  # 0 is the greeting
            c.in_speech, c.silence_ms, c.chunk_seq, c.barged = True, 0, 0, False
            c.voiced_ms, c.turn_ms = c.onset_run * frame_ms, len(c.preroll) * frame_ms
            c.speech_start_us, c.last_voiced_us = first_voiced.ts_us, frame.ts_us
            corr = in_corr.child(c.turn_seq)
            metrics.TURNS.inc()
            outs.append(
                Out(
                    TurnEvent(frame.call_id, c.turn_seq, TurnEventKind.SPEECH_STARTED, now_us(), c.speech_start_us),
                    corr,
                )
            )
            outs.extend(self._chunk(c, f.frame, corr) for f in c.preroll)
            c.preroll.clear()
        else:
            corr = in_corr.child(c.turn_seq)
            outs.append(self._chunk(c, frame, corr))
            c.turn_ms += frame_ms
            if voiced:
                c.voiced_ms += frame_ms
                c.silence_ms = 0
                c.last_voiced_us = frame.ts_us
            else:
                c.silence_ms += frame_ms
        if frame.agent_turn_seq is not None and not c.barged and c.voiced_ms >= self.s.barge_in_ms:
            outs.extend(self._barge_in(c, frame, corr))
        if c.silence_ms >= self.s.end_of_turn_ms or c.turn_ms >= self.s.max_turn_ms:
            outs.extend(self._end_of_turn(c, frame, corr))
            c.floor = offset + 1
        return outs

    def _barge_in(self, c: _Call, frame: AudioFrame, corr: Correlation) -> list[Out]:
        c.barged = True
        metrics.BARGE_INS.inc()
        logger.info("barge-in", extra={"fields": {"cancelled_turn": frame.agent_turn_seq}})
        return [
            Out(
                TurnEvent(
                    frame.call_id,
                    c.turn_seq,
                    TurnEventKind.BARGE_IN,
                    now_us(),
                    c.speech_start_us,
                    cancelled_turn_seq=frame.agent_turn_seq,
                ),
                corr,
            ),
            # every reply to an earlier caller turn goes: the one playing and any queued behind it
            Out(
                PlaybackCommand(frame.call_id, PlaybackKind.CLEAR, c.turn_seq - 1, now_us(), c.speech_start_us),
                corr,
                partition=frame.reply_partition,
            ),
        ]

    def _end_of_turn(self, c: _Call, frame: AudioFrame, corr: Correlation) -> list[Out]:
        c.in_speech, c.onset_run = False, 0
        detected = now_us()
        timings = Timings(speech_start_us=c.speech_start_us, speech_end_us=c.last_voiced_us, turn_detected_us=detected)
        final = SpeechChunk(
            frame.call_id, c.turn_seq, c.chunk_seq, detected, frame.sample_rate, b"", True, c.language, timings
        )
        return [
            Out(
                TurnEvent(
                    frame.call_id,
                    c.turn_seq,
                    TurnEventKind.END_OF_TURN,
                    detected,
                    c.speech_start_us,
                    speech_end_us=c.last_voiced_us,
                ),
                corr,
            ),
            Out(final, corr),
        ]
