"""Turn-taking per call: speech onset, end of turn, barge-in.

Inputs: ``audio.in`` (caller frames) and ``calls`` (to know the reply partition
and whether the agent is speaking). Outputs: ``turns`` events, the turn's audio
on ``speech`` for STT, and ``playback`` clear commands on barge-in.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np

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
from processors.turns.settings import TurnsSettings
from processors.turns.vad import VoiceActivity

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Call:
    vad: VoiceActivity
    reply_partition: int = 0
    language: str = "en-US"
    agent_speaking: bool = False
    playing_turn: int = 0
    turn_seq: int = 0
    in_speech: bool = False
    onset_run: int = 0  # consecutive voiced frames before onset
    voiced_frames: int = 0  # in the current turn
    silence_ms: int = 0
    turn_ms: int = 0
    speech_start_us: int = 0
    last_voiced_us: int = 0
    chunk_seq: int = 0
    barged: bool = False
    preroll: deque[tuple[AudioFrame, bool]] = field(default_factory=deque)


class TurnDetector:
    name = "turns"
    inputs: tuple[Topic, ...] = (AUDIO_IN, CALLS)

    def __init__(self, settings: TurnsSettings, vad_factory: Callable[[], VoiceActivity]) -> None:
        self.s = settings
        self.vad_factory = vad_factory
        self.calls: dict[str, _Call] = {}

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        # turn state is short-lived; calls on revoked partitions restart detection elsewhere
        self.calls.clear()

    def _call(self, call_id: str) -> _Call:
        if call_id not in self.calls:
            self.calls[call_id] = _Call(vad=self.vad_factory())
        return self.calls[call_id]

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        record = msg.record
        if isinstance(record, CallEvent):
            self._call_event(record)
            return
        if isinstance(record, AudioFrame):
            for out in self._frame(record, msg.corr):
                yield out

    def _call_event(self, ev: CallEvent) -> None:
        if ev.kind is CallEventKind.CALL_ENDED:
            self.calls.pop(ev.call_id, None)
            return
        c = self._call(ev.call_id)
        if ev.kind is CallEventKind.CALL_STARTED:
            c.reply_partition, c.language = ev.reply_partition, ev.language
        elif ev.kind is CallEventKind.PLAYBACK_STARTED:
            c.agent_speaking, c.playing_turn = True, ev.turn_seq or 0
        elif ev.kind in (CallEventKind.PLAYBACK_FINISHED, CallEventKind.PLAYBACK_CLEARED):
            if ev.turn_seq is None or ev.turn_seq >= c.playing_turn:
                c.agent_speaking = False

    def _chunk(self, c: _Call, frame: AudioFrame, corr: Correlation) -> Out:
        chunk = SpeechChunk(frame.call_id, c.turn_seq, c.chunk_seq, now_us(), frame.sample_rate, frame.pcm, False, c.language)
        c.chunk_seq += 1
        return Out(chunk, corr)

    def _frame(self, frame: AudioFrame, in_corr: Correlation) -> list[Out]:
        c = self._call(frame.call_id)
        samples = pcm16_to_array(frame.pcm)
        frame_ms = len(samples) * 1000 // frame.sample_rate
        voiced = c.vad.is_speech(samples, frame.sample_rate) if frame_ms == c.vad.frame_ms else _split_vad(
            c.vad, samples, frame.sample_rate
        )
        outs: list[Out] = []
        if not c.in_speech:
            c.preroll.append((frame, voiced))
            while len(c.preroll) * frame_ms > max(self.s.preroll_ms, self.s.speech_start_ms):
                c.preroll.popleft()
            c.onset_run = c.onset_run + 1 if voiced else 0
            if c.onset_run * frame_ms < self.s.speech_start_ms:
                return outs
            # speech onset: a new caller turn
            c.turn_seq += 1
            c.in_speech, c.silence_ms, c.chunk_seq, c.barged = True, 0, 0, False
            c.voiced_frames, c.turn_ms = c.onset_run, len(c.preroll) * frame_ms
            first_voiced = c.preroll[-c.onset_run][0]
            c.speech_start_us, c.last_voiced_us = first_voiced.ts_us, frame.ts_us
            corr = in_corr.child(c.turn_seq)
            metrics.TURNS.inc()
            outs.append(Out(TurnEvent(frame.call_id, c.turn_seq, TurnEventKind.SPEECH_STARTED, now_us(), c.speech_start_us), corr))
            outs.extend(self._chunk(c, f, corr) for f, _ in c.preroll)
            c.preroll.clear()
        else:
            corr = in_corr.child(c.turn_seq)
            outs.append(self._chunk(c, frame, corr))
            c.turn_ms += frame_ms
            if voiced:
                c.voiced_frames += 1
                c.silence_ms = 0
                c.last_voiced_us = frame.ts_us
            else:
                c.silence_ms += frame_ms
        if c.agent_speaking and not c.barged and c.voiced_frames * frame_ms >= self.s.barge_in_ms:
            outs.extend(self._barge_in(c, frame.call_id, corr))
        if c.silence_ms >= self.s.end_of_turn_ms or c.turn_ms >= self.s.max_turn_ms:
            outs.extend(self._end_of_turn(c, frame, corr))
        return outs

    def _barge_in(self, c: _Call, call_id: str, corr: Correlation) -> list[Out]:
        c.barged, c.agent_speaking = True, False
        metrics.BARGE_INS.inc()
        through = c.turn_seq - 1  # every reply to an earlier caller turn
        logger.info("barge-in", extra={"fields": {"cancelled_turn": c.playing_turn}})
        return [
            Out(TurnEvent(call_id, c.turn_seq, TurnEventKind.BARGE_IN, now_us(), c.speech_start_us,
                          cancelled_turn_seq=c.playing_turn), corr),
            Out(PlaybackCommand(call_id, PlaybackKind.CLEAR, through, now_us(), c.speech_start_us), corr,
                partition=c.reply_partition),
        ]

    def _end_of_turn(self, c: _Call, frame: AudioFrame, corr: Correlation) -> list[Out]:
        c.in_speech, c.onset_run = False, 0
        detected = now_us()
        timings = Timings(speech_start_us=c.speech_start_us, speech_end_us=c.last_voiced_us, turn_detected_us=detected)
        final = SpeechChunk(frame.call_id, c.turn_seq, c.chunk_seq, detected, frame.sample_rate, b"", True, c.language,
                            timings)
        return [
            Out(TurnEvent(frame.call_id, c.turn_seq, TurnEventKind.END_OF_TURN, detected, c.speech_start_us,
                          speech_end_us=c.last_voiced_us), corr),
            Out(final, corr),
        ]


def _split_vad(vad: VoiceActivity, samples: np.ndarray, rate: int) -> bool:
    """Frames of another size: voiced if most of their VAD-sized parts are."""
    n = rate * vad.frame_ms // 1000
    parts = [samples[i : i + n] for i in range(0, len(samples) - n + 1, n)]
    return bool(parts) and sum(vad.is_speech(p, rate) for p in parts) * 2 > len(parts)
