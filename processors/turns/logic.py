"""Turn-taking per call: speech onset, end of turn, barge-in.

Inputs: ``audio.in`` (caller frames; each says which reply partition the
caller's ingress node reads and which agent reply it is playing right now),
``calls`` (call start/end) and ``transcripts`` (STT's early transcripts, for the
end-of-turn decision). Outputs: ``turns`` events, the turn's audio on
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

The end of a turn is decided by meaning (``profiles.py`` has the policy and the numbers):

1. When a turn in speech reaches ``pause_ms`` of silence (and again at each later pause after
   new voiced audio), its audio so far goes to STT as a chunk marked ``pause``, and Smart Turn
   starts on its last 8 s, off the event loop. The pause is identified by the turn's audio sent
   so far (``audio_ms``), which STT's ``early`` transcript echoes.
2. Once Smart Turn's probability and that pause's early transcript are both known, ``judge``
   gives a verdict: complete → the turn ends when the silence reaches ``complete_end_ms``
   (~250 ms; at once if it already has, which is the usual case: the transcript comes back
   ~150-300 ms into the silence); unfinished (a dangling last word, or unfinished prosody before the
   transcript came) → it ends only at ``incomplete_end_ms`` (~1.1 s); whole words in an unfinished
   voice, or a trailing comma → ``uncertain_end_ms`` (700 ms). Smart Turn alone can say
   "unfinished", never "finished": a phrase cut off with falling intonation sounds finished to it.
3. With no verdict (no early transcript yet, Smart Turn off or failed) the turn ends after
   ``end_of_turn_ms`` (700 ms), as before. Voiced audio at any point voids the pause's judgement.

Caller voice over the agent's reply (frames carrying ``agent_turn_seq``) is judged in two steps (README
"Interruptions"): after ``barge_in_pause_ms`` of voice a ``pause`` command holds the reply at the ingress; it becomes
a real interruption (BARGE_IN, ``clear``) at ``interrupt_ms`` of voice or when the turn's early transcript holds
words that are not the profile's backchannels; a transcript of only backchannels (or of no words: a cough), or no
transcript ``resume_after_ms`` into the silence, sends ``resume`` and counts a false interruption, and that little
turn ends with reason ``backchannel``, which its final chunk carries: STT closes the turn's stream without a
transcript, so the agent never answers it. Voice starting within the profile's ``reply_start_guard_ms`` of the
reply's first frame is not paused.

Silence is counted in the caller's frames, not the wall clock, so a replay of the same frames
and transcripts decides the same; a verdict that arrives after its silence has already passed
ends the turn when it arrives, with the audio seen so far. Turn IDs do not depend on when a turn
ended (the next onset is a frame number). An early transcript redelivered on a replay names its
pause by ``audio_ms`` and applies only to that pause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Protocol

import numpy as np

from processors.turns.pause import Pause
from processors.turns.profiles import is_backchannel, profile_for
from processors.turns.settings import TurnsSettings
from processors.turns.state import SMART_TURN_BYTES, SMART_TURN_RATE, CallState, Frame
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
    Transcript,
    TranscriptKind,
    TurnEvent,
    TurnEventKind,
    now_us,
)
from switchboard.runner import Incoming, Out
from switchboard.topics import AUDIO_IN, CALLS, TRANSCRIPTS, Topic

logger = logging.getLogger(__name__)


FRAME_MS = 20  # the unit of every decision: a record of 40-100 ms is stepped through 20 ms at a time


class EndOfTurnModel(Protocol):
    """Smart Turn (``processors.turns.smart_turn.SmartTurn``): P(turn complete) from 16 kHz audio, blocking."""

    def probability(self, samples_16k: np.ndarray) -> float: ...


class TurnDetector:
    name = "turns"
    inputs: tuple[Topic, ...] = (AUDIO_IN, CALLS, TRANSCRIPTS)

    def __init__(
        self,
        settings: TurnsSettings,
        vad_factory: Callable[[], VoiceActivity],
        smart_turn: EndOfTurnModel | None = None,
    ) -> None:
        self.s = settings
        self.vad_factory = vad_factory
        self.smart_turn = smart_turn  # None: no prosody; the early transcript can only extend a hanging turn
        self.calls: dict[str, CallState] = {}
        self._last_sweep_us = 0
        # per partition: newest frame timestamp handled, and when (monotonic s); see _sweep
        self._clock: dict[int, tuple[int, float]] = {}

    async def on_assigned(self, partitions: set[int]) -> None:
        return None

    async def on_revoked(self, partitions: set[int]) -> None:
        for c in self.calls.values():
            if c.partition in partitions:
                _drop_pause(c)
        self.calls = {k: c for k, c in self.calls.items() if c.partition not in partitions}
        self._clock = {p: t for p, t in self._clock.items() if p not in partitions}

    def commit_floor(self, topic: Topic, partition: int) -> int | None:
        if topic is not AUDIO_IN:
            return None
        floors = [c.floor for c in self.calls.values() if c.partition == partition]
        return min(floors) if floors else None

    def _call(self, call_id: str, partition: int) -> CallState:
        if call_id not in self.calls:
            keep = max(self.s.preroll_ms, self.s.speech_start_ms) // FRAME_MS
            self.calls[call_id] = CallState(
                vad=self.vad_factory(), partition=partition, call_id=call_id, preroll=deque(maxlen=max(1, keep))
            )
        return self.calls[call_id]

    async def handle(self, msg: Incoming) -> AsyncIterator[Out]:
        record = msg.record
        if isinstance(record, CallEvent):
            if record.kind is CallEventKind.CALL_ENDED:
                ended = self.calls.pop(record.call_id, None)
                if ended is not None:
                    _drop_pause(ended)  # no work for a call that has ended
            elif record.kind is CallEventKind.CALL_STARTED:
                c = self._call(record.call_id, msg.partition)
                c.started, c.language, c.profile = record, record.language, profile_for(record.language)
            return
        if isinstance(record, Transcript):
            if record.kind is TranscriptKind.EARLY:
                for out in await self._early(record, msg.corr):
                    yield out
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
                _drop_pause(c)
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

    def _flush(self, c: CallState, call_id: str, corr: Correlation, pause: bool = False) -> Out:
        """The turn's audio gathered so far as one chunk (several frames; the pre-roll with the onset)."""
        chunk = SpeechChunk(
            call_id, c.turn_seq, c.chunk_seq, now_us(), c.rate, bytes(c.pending), False, c.language, pause=pause
        )
        c.chunk_seq += 1
        c.sent_bytes += len(c.pending)
        c.pending.clear()
        return Out(chunk, corr)

    def _pause_ms(self, c: CallState) -> int:
        return max(self.s.pause_ms, c.profile.pause_ms)

    def _start_pause(self, c: CallState) -> None:
        """The turn reached a pause: judge its audio so far (Smart Turn now, the early transcript when STT has it)."""
        c.pause = Pause(audio_ms=c.sent_bytes * 1000 // (2 * c.rate), detected_us=now_us())
        if self.smart_turn is not None and c.rate == SMART_TURN_RATE:
            c.pause.hear(self.smart_turn.probability, np.frombuffer(bytes(c.window[-SMART_TURN_BYTES:]), np.int16))

    def _threshold(self, c: CallState) -> tuple[int, str]:
        """The silence (ms) that ends the open turn now, and why."""
        if c.pause is not None:
            c.pause.settle(c.profile)
            if c.pause.verdict is not None:
                return c.pause.verdict.end_after_ms, c.pause.verdict.reason
        return self.s.end_of_turn_ms, "timeout"

    async def _early(self, t: Transcript, corr: Correlation) -> list[Out]:
        """STT's early transcript of a pause: it completes the pause's verdict, which the caller's frames then apply."""
        c = self.calls.get(t.call_id)
        if c is None or not c.in_speech or c.turn_seq != t.turn_seq:
            logger.debug("early transcript of an ended turn", extra={"fields": {"turn": t.turn_seq}})
            return []  # a turn already ended (or never seen here)
        p = c.pause
        if p is None or p.audio_ms != t.audio_ms or p.transcript is not None:
            logger.debug(
                "early transcript of another pause",
                extra={"fields": {"turn": t.turn_seq, "audio_ms": t.audio_ms, "pause": p.audio_ms if p else None}},
            )
            return []  # the caller spoke again after that pause, or a duplicate
        since_pause_ms = (now_us() - p.detected_us) // 1000
        logger.debug(
            "early transcript", extra={"fields": {"turn": t.turn_seq, "silence_ms": c.silence_ms, "ms": since_pause_ms}}
        )
        p.transcript = t.text
        decided = self._judge_words(c, t.text, corr)
        if p.smart is not None and not p.smart.done():
            # started at the pause, before STT even had the audio: normally done by now; bounded by one model call
            await asyncio.wait({p.smart})
            if self.calls.get(t.call_id) is not c or c.pause is not p or not c.in_speech:
                return decided
        # The verdict is kept, and the caller's next frame ends the turn if the silence has lasted long enough by then,
        # never this transcript: when this worker runs behind the caller's audio, frames already on the bus may hold
        # the rest of the sentence, and ending on the frames seen so far would cut the caller off in a pause. It
        # costs at most one audio record (SWITCHBOARD_AUDIO_RECORD_MS) when the silence is already long enough.
        return decided

    def _frames(self, c: CallState, record: AudioFrame, offset: int, n: int) -> list[Frame]:
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
            Frame(pcm[k * step : (k + 1) * step], seq + k, ts + k * us, first_offset if k == 0 else offset)
            for k in range(n)
        ]
        if len(pcm) > n * step:
            c.carry = Frame(pcm[n * step :], seq + n, ts + n * FRAME_MS * 1000, first_offset if n == 0 else offset)
        return frames

    def _record(
        self, c: CallState, record: AudioFrame, decisions: list[bool], offset: int, in_corr: Correlation
    ) -> list[Out]:
        """Step through the record's 20 ms frames, one VAD decision each."""
        c.last_frame_us = record.ts_us
        c.last_offset, c.rate = offset, record.sample_rate
        agent = c.agent_now = record.agent_turn_seq
        c.reply_partition = record.reply_partition
        if agent is not None and agent != c.reply_turn:  # a reply began playing: its start guard counts from here
            c.reply_turn, c.reply_first_seq = agent, record.seq
        outs: list[Out] = []
        if not c.in_speech and not any(decisions) and not c.onset_run and c.carry is None:
            # the common case (silence between turns), without cutting the record into frame objects
            step = record.sample_rate * FRAME_MS // 1000 * 2
            if len(record.pcm) == step * len(decisions):
                for k in range(len(decisions)):
                    ts = record.ts_us + k * FRAME_MS * 1000
                    c.preroll.append(Frame(record.pcm[k * step : (k + 1) * step], record.seq + k, ts, offset))
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
                c.over, c.held, c.resumed, c.backchannel = agent, None, False, False
                c.guarded = agent is not None and (first_voiced.seq - c.reply_first_seq) * FRAME_MS < (
                    c.profile.reply_start_guard_ms
                )
                c.voiced_ms, c.turn_ms = c.onset_run * FRAME_MS, len(c.preroll) * FRAME_MS
                c.speech_start_us, c.last_voiced_us = first_voiced.ts_us, f.ts_us
                corr = in_corr.child(c.turn_seq)
                metrics.TURNS.inc()
                started = TurnEvent(
                    record.call_id, c.turn_seq, TurnEventKind.SPEECH_STARTED, now_us(), c.speech_start_us
                )
                outs.append(Out(started, corr))
                c.sent_bytes, c.pause = 0, None
                c.window.clear()
                for p in c.preroll:
                    c.pending += p.pcm
                    c.window += p.pcm
                c.preroll.clear()
            else:
                if corr is None:
                    corr = in_corr.child(c.turn_seq)
                c.pending += f.pcm
                c.window += f.pcm
                if len(c.window) > 2 * SMART_TURN_BYTES:  # trimmed now and then, not every frame
                    del c.window[:-SMART_TURN_BYTES]
                c.turn_ms += FRAME_MS
                if voiced:
                    c.voiced_ms += FRAME_MS
                    c.silence_ms = 0
                    c.last_voiced_us = f.ts_us
                    _drop_pause(c)  # the caller went on: that pause's judgement no longer holds
                else:
                    c.silence_ms += FRAME_MS
                    if c.pause is None and c.silence_ms >= self._pause_ms(c):
                        outs.append(self._flush(c, record.call_id, corr, pause=True))
                        self._start_pause(c)
            assert corr is not None  # set at onset or by the first frame of this record in the turn
            if agent is not None and not c.barged:
                outs.extend(self._over_reply(c, record, corr))
            elif c.held is not None and not c.resumed and not c.barged and c.silence_ms >= self.s.resume_after_ms:
                outs.extend(self._resume(c, record.call_id, "no_transcript", corr))  # the reply is over: let go
            end_after, reason = self._threshold(c)
            if c.held is not None and not c.resumed and not c.barged:
                end_after = max(end_after, self.s.resume_after_ms)  # the turn is judged an interruption or not first
            if c.turn_ms >= self.s.max_turn_ms:
                end_after, reason = 0, "max_length"
            if c.silence_ms >= end_after:
                if c.pending:
                    outs.append(self._flush(c, record.call_id, corr))
                outs.extend(self._end_of_turn(c, record.call_id, corr, reason))
                corr = None  # a turn starting later in this record gets its own
                c.floor = f.offset + 1
        if c.in_speech and c.pending and corr is not None:
            outs.append(self._flush(c, record.call_id, corr))
        if c.carry is not None:  # a partial frame is still needed from its record on
            c.floor = min(c.floor, c.carry.offset)
        return outs

    def _over_reply(self, c: CallState, frame: AudioFrame, corr: Correlation) -> list[Out]:
        """One frame of the caller's turn while a reply plays: hold it once the voice is likely speech, cut it once the
        voice is long enough to be an interruption whatever its words."""
        if c.over is None:  # the reply started during the caller's turn (they were still talking): as at its start
            c.over, c.guarded = c.agent_now, True
        outs: list[Out] = []
        if c.held is None and not c.guarded and not c.resumed and c.voiced_ms >= self.s.barge_in_pause_ms:
            c.held = c.agent_now
            outs.append(self._command(c, frame.call_id, PlaybackKind.PAUSE, corr))
            logger.info("reply paused", extra={"fields": {"turn": c.turn_seq, "reply": c.held}})
        if c.voiced_ms >= self.s.interrupt_ms:
            outs.extend(self._barge_in(c, frame.call_id, corr))
        elif c.held is not None and not c.resumed and c.silence_ms >= self.s.resume_after_ms:
            outs.extend(self._resume(c, frame.call_id, "no_transcript", corr))
        return outs

    def _judge_words(self, c: CallState, text: str, corr: Correlation) -> list[Out]:
        """The early transcript of a turn spoken over a reply: words that are not backchannels interrupt it; only
        backchannels (or none: a cough) resume it, and the turn will not be answered."""
        if c.over is None or c.barged or c.agent_now is None:
            if c.held is not None and not c.resumed and not c.barged:
                # the reply ended meanwhile (the ingress let it end: near its end): a no-op resume, not counted
                return self._resume(c, c.call_id, "", corr)
            return []  # the agent was silent (or the reply is over): a turn like any other
        if not is_backchannel(text, c.profile):
            return self._barge_in(c, c.call_id, corr)
        c.backchannel = True
        if c.held is None or c.resumed:
            return []  # never paused (near the reply's start, or too short): nothing to resume
        return self._resume(c, c.call_id, "backchannel" if text.strip(" .,!?") else "no_words", corr)

    def _resume(self, c: CallState, call_id: str, reason: str, corr: Correlation) -> list[Out]:
        c.resumed = True
        c.backchannel = c.backchannel or (reason == "no_transcript" and c.agent_now is not None)
        if reason:
            metrics.FALSE_INTERRUPTIONS.labels(reason).inc()
        logger.info("reply resumed", extra={"fields": {"turn": c.turn_seq, "reply": c.held, "reason": reason}})
        return [self._command(c, call_id, PlaybackKind.RESUME, corr)]

    def _command(self, c: CallState, call_id: str, kind: PlaybackKind, corr: Correlation) -> Out:
        """A playback command to the call's reply partition; every reply to an earlier caller turn is meant: the one
        playing and any queued behind it."""
        cmd = PlaybackCommand(call_id, kind, c.turn_seq - 1, now_us(), c.speech_start_us)
        return Out(cmd, corr, partition=c.reply_partition)

    def _barge_in(self, c: CallState, call_id: str, corr: Correlation) -> list[Out]:
        c.barged, c.backchannel = True, False
        metrics.BARGE_INS.inc()
        logger.info("barge-in", extra={"fields": {"cancelled_turn": c.over}})
        return [
            Out(
                TurnEvent(
                    call_id,
                    c.turn_seq,
                    TurnEventKind.BARGE_IN,
                    now_us(),
                    c.speech_start_us,
                    cancelled_turn_seq=c.agent_now if c.agent_now is not None else c.over,
                ),
                corr,
            ),
            self._command(c, call_id, PlaybackKind.CLEAR, corr),
        ]

    def _end_of_turn(self, c: CallState, call_id: str, corr: Correlation, reason: str) -> list[Out]:
        c.in_speech, c.onset_run = False, 0
        if c.backchannel and not c.barged:
            # "uh-huh" over the agent takes no turn: its final chunk carries this reason, so STT closes the turn's
            # stream (its commit floor moves on) and gives no final transcript: the agent has nothing to answer
            reason = "backchannel"
        detected = now_us()
        p = c.pause
        timings = Timings(
            speech_start_us=c.speech_start_us,
            speech_end_us=c.last_voiced_us,
            turn_detected_us=detected,
            pause_detected_us=p.detected_us if p else None,
            end_decision_us=p.decided_us if p else None,
            end_reason=reason,
        )
        # no voice since the last pause chunk: STT's early transcript of that pause is the whole turn's
        final = SpeechChunk(
            call_id,
            c.turn_seq,
            c.chunk_seq,
            detected,
            c.rate,
            b"",
            True,
            c.language,
            timings,
            silent_since_pause=p is not None,
        )
        kind = reason.split(":", 1)[0]  # "dangling:an" counts as dangling: a bounded label set
        metrics.END_OF_TURN.labels(kind).inc()
        metrics.TURN_DETECTION.labels(kind).observe(max(0, detected - c.last_voiced_us) / 1e6)
        # where the wait went, from the last voiced frame (ingress time): to the pause seen here, to its verdict, to now
        waits = {"pause_ms": (p.detected_us - c.last_voiced_us) // 1000,
                 "verdict_ms": (p.decided_us - p.detected_us) // 1000 if p.decided_us else None} if p else {}
        logger.info("end of turn", extra={"fields": {"turn": c.turn_seq, "reason": reason, "silence_ms": c.silence_ms,
                                                     "detected_ms": (detected - c.last_voiced_us) // 1000, **waits}})
        _drop_pause(c)
        c.window.clear()
        return [
            Out(
                TurnEvent(
                    call_id,
                    c.turn_seq,
                    TurnEventKind.END_OF_TURN,
                    detected,
                    c.speech_start_us,
                    speech_end_us=c.last_voiced_us,
                    end_reason=reason,
                    early_audio_ms=p.audio_ms if p is not None else None,
                    timings=timings,
                ),
                corr,
            ),
            Out(final, corr),
        ]


def _drop_pause(c: CallState) -> None:
    """Forget the current pause's judgement; a Smart Turn still queued for the pool is never run."""
    if c.pause is not None:
        c.pause.drop()
    c.pause = None
