"""Turn-taking per call: speech onset, end of turn, barge-in.

Inputs: ``audio.in`` (caller frames; each says which reply partition the
caller's ingress node reads and which agent reply it is playing right now) and
``calls`` (call start/end). Outputs: ``turns`` events, the turn's audio on
``speech`` for STT, ``playback`` clear commands on barge-in, and a
``call_ended`` (reason ``ingress_lost``) for calls whose audio stopped without
an end, as when an ingress node dies.

A record may carry several 20 ms frames (its ``seq`` is the number of its first
frame): every decision (onset, silence, end of turn, barge-in) is taken per 20 ms
frame, so turns, their IDs and their times do not depend on the record size. The
turn's audio goes to STT one chunk per record (the pre-roll with the onset).

A turn's ID is the call's 20 ms frame number at speech onset, so it is the same
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


FRAME_MS = 20  # the unit of every decision: a record of 40-100 ms is stepped through 20 ms at a time


@dataclass(slots=True)
class _Frame:
    """One 20 ms frame of a call's stream: its number in the call, capture time and the record holding it."""

    pcm: bytes
    seq: int
    ts_us: int
    offset: int


@dataclass(slots=True)
class _Call:
    vad: VoiceActivity
    partition: int
    preroll: deque[_Frame]  # bounded: max(preroll_ms, speech_start_ms) of frames before onset
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
    pending: bytearray = field(default_factory=bytearray)  # the turn's audio not yet sent as a chunk
    carry: _Frame | None = None  # a partial frame left by a record that was not a whole number of frames


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
            keep = max(self.s.preroll_ms, self.s.speech_start_ms) // FRAME_MS
            self.calls[call_id] = _Call(vad=self.vad_factory(), partition=partition, preroll=deque(maxlen=max(1, keep)))
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
            # the load generator's lost-frame count compares this with the 20 ms frames callers sent
            metrics.CALLER_FRAMES_CONSUMED.labels(self.name).inc(len(record.pcm) // (record.sample_rate // 25 or 1))
            newest = max(record.ts_us, self._clock.get(msg.partition, (0, 0.0))[0])
            self._clock[msg.partition] = (newest, time.monotonic())
            c = self._call(record.call_id, msg.partition)
            samples = pcm16_to_array(record.pcm)
            aprocess = getattr(c.vad, "aprocess", None)  # Silero batches its model passes across calls
            if aprocess is not None:
                decisions = await aprocess(samples, record.sample_rate)
            else:
                decisions = c.vad.process(samples, record.sample_rate)
            for out in self._record(c, record, decisions, msg.offset, msg.corr):
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

    def _flush(self, c: _Call, frame: AudioFrame, corr: Correlation) -> Out:
        """The turn's audio gathered so far as one chunk (several frames; the pre-roll with the onset)."""
        chunk = SpeechChunk(
            frame.call_id, c.turn_seq, c.chunk_seq, now_us(), frame.sample_rate, bytes(c.pending), False, c.language
        )
        c.chunk_seq += 1
        c.pending.clear()
        return Out(chunk, corr)

    def _frames(self, c: _Call, record: AudioFrame, offset: int, n: int) -> list[_Frame]:
        """The record cut into 20 ms frames; frame k is the call's frame ``seq + k``, captured 20 ms after frame k-1.

        A record is normally a whole number of frames; if not, the tail is carried over to the
        next record, as the VAD carries its samples, so frames and VAD decisions stay in step."""
        step = record.sample_rate * FRAME_MS // 1000 * 2  # bytes per frame
        if c.carry is None:
            pcm, seq, ts, first_offset = record.pcm, record.seq, record.ts_us, offset
        else:
            pcm, seq, ts, first_offset = c.carry.pcm + record.pcm, c.carry.seq, c.carry.ts_us, c.carry.offset
            c.carry = None
        us = FRAME_MS * 1000
        frames = [
            _Frame(pcm[k * step : (k + 1) * step], seq + k, ts + k * us, first_offset if k == 0 else offset)
            for k in range(n)
        ]
        if len(pcm) > n * step:
            c.carry = _Frame(pcm[n * step :], seq + n, ts + n * FRAME_MS * 1000, first_offset if n == 0 else offset)
        return frames

    def _record(
        self, c: _Call, record: AudioFrame, decisions: list[bool], offset: int, in_corr: Correlation
    ) -> list[Out]:
        """Step through the record's 20 ms frames, one VAD decision each."""
        c.last_frame_us = record.ts_us
        outs: list[Out] = []
        if not c.in_speech and not any(decisions) and not c.onset_run and c.carry is None:
            # the common case (silence between turns), without cutting the record into frame objects
            step = record.sample_rate * FRAME_MS // 1000 * 2
            if len(record.pcm) == step * len(decisions):
                for k in range(len(decisions)):
                    ts = record.ts_us + k * FRAME_MS * 1000
                    c.preroll.append(_Frame(record.pcm[k * step : (k + 1) * step], record.seq + k, ts, offset))
                if c.preroll:
                    c.floor = c.preroll[0].offset
                return outs
        corr: Correlation | None = None
        for f, voiced in zip(self._frames(c, record, offset, len(decisions)), decisions, strict=True):
            if not c.in_speech:
                c.preroll.append(f)
                c.floor = c.preroll[0].offset
                c.onset_run = c.onset_run + 1 if voiced else 0
                if c.onset_run * FRAME_MS < self.s.speech_start_ms:
                    continue
                first_voiced = c.preroll[-c.onset_run]
                c.turn_seq = first_voiced.seq + 1  # 0 is the greeting
                c.in_speech, c.silence_ms, c.chunk_seq, c.barged = True, 0, 0, False
                c.voiced_ms, c.turn_ms = c.onset_run * FRAME_MS, len(c.preroll) * FRAME_MS
                c.speech_start_us, c.last_voiced_us = first_voiced.ts_us, f.ts_us
                corr = in_corr.child(c.turn_seq)
                metrics.TURNS.inc()
                started = TurnEvent(
                    record.call_id, c.turn_seq, TurnEventKind.SPEECH_STARTED, now_us(), c.speech_start_us
                )
                outs.append(Out(started, corr))
                for p in c.preroll:
                    c.pending += p.pcm
                c.preroll.clear()
            else:
                if corr is None:
                    corr = in_corr.child(c.turn_seq)
                c.pending += f.pcm
                c.turn_ms += FRAME_MS
                if voiced:
                    c.voiced_ms += FRAME_MS
                    c.silence_ms = 0
                    c.last_voiced_us = f.ts_us
                else:
                    c.silence_ms += FRAME_MS
            assert corr is not None  # set at onset or by the first frame of this record in the turn
            if record.agent_turn_seq is not None and not c.barged and c.voiced_ms >= self.s.barge_in_ms:
                outs.extend(self._barge_in(c, record, corr))
            if c.silence_ms >= self.s.end_of_turn_ms or c.turn_ms >= self.s.max_turn_ms:
                outs.append(self._flush(c, record, corr))
                outs.extend(self._end_of_turn(c, record, corr))
                corr = None  # a turn starting later in this record gets its own
                c.floor = f.offset + 1
        if c.in_speech and c.pending and corr is not None:
            outs.append(self._flush(c, record, corr))
        if c.carry is not None:  # a partial frame is still needed from its record on
            c.floor = min(c.floor, c.carry.offset)
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
