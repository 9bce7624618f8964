"""One call on this ingress node: caller audio in, paced agent audio out.

Channel-specific code (Twilio, ACS, JSON) supplies a ``CallerSocket`` that
knows its wire format; everything else about a call lives here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ingress.callparts import FRAME_MS, FRAME_SAMPLES, CallerSocket, CallInfo, CallLimits, Chunk, HungUp
from ingress.filler import PlaybackPolicy, SpeechCue
from ingress.heard import Hold, HoldPolicy, ReplyAudio
from ingress.holding import ReplyHolding
from ingress.limits import AudioBudget, TokenBucket
from ingress.protocol import DTMF_DIGITS
from ingress.sendpath import AudioSendPath
from ingress.silence import CLOSE, PROMPT, SilencePolicy, SilenceTimer
from switchboard import metrics, tracing
from switchboard.audio import BUS_RATE, array_to_pcm16
from switchboard.bus import Correlation, Publisher
from switchboard.latency import turn_latency
from switchboard.logs import correlation
from switchboard.records import (
    FILLER_MARK,
    AudioFrame,
    AudioOut,
    AudioOutKind,
    CallEvent,
    CallEventKind,
    PlaybackCommand,
    PlaybackKind,
    now_us,
)

logger = logging.getLogger(__name__)

FILLER_TURN = -1  # the filler's place in the playback queue: before every reply, cleared by any clear
HANDOFF_KEY = "0"  # the key the agent hands off on, at any time (processors/agent/policy.py): the call ends "handoff"


class CallSession(ReplyHolding):
    """One call on this node: its caller audio to the bus, the agent audio paced out to its socket."""

    def __init__(
        self,
        info: CallInfo,
        socket: CallerSocket,
        publisher: Publisher,
        reply_partition: int,
        node: str,
        lead_ms: int,
        limits: CallLimits | None = None,
        send_path: AudioSendPath | None = None,
        connected_at: float | None = None,
        start_publisher: Publisher | None = None,
    ) -> None:
        self.info = info
        self.socket = socket
        self.publisher = publisher
        self.reply_partition = reply_partition
        self.node = node
        self.corr = Correlation.new_call(info.call_id, info.session_id, info.agent_id)
        self._audio_window: tracing.AudioWindow | None = None  # tracing on: the caller's audio until the next answer
        self._lead_s = lead_ms / 1000
        self._seq = 0  # 20 ms frames published so far: the next record's seq
        self._pending_in = np.zeros(0, dtype=np.int16)
        self._pending_ts = 0  # when the first sample of _pending_in arrived
        self._queue: deque[Chunk] = deque()
        self._wake = asyncio.Event()
        self._cleared_through = -1
        self._started_turns: set[int] = set()
        self._playing_turn: int | None = None
        self._reply_done = False
        # replies are idempotent at the ingress: the newest reply accepted and its last seq (a replay repeats both)
        self._newest_turn, self._newest_seq = -1, -1
        self._input_seq = -1  # turn_seq of the newest key press or silence event
        self._finished_through = -1  # playback_finished is recorded once per reply, by its END or by the drain
        self._drained: tuple[int, float] = (-1, 0.0)  # the reply last finished by the drain, and when (monotonic)
        self._filler: np.ndarray | None = None  # the call's filler phrase, sent by TTS at call start
        self._agent_end_reason = "agent_hangup"  # call_ended's reason when the agent ends the call (silence, handoff)
        # what the caller heard (ingress/heard.py): per reply, and the pacing clock (when the next frame plays)
        self._replies: dict[int, ReplyAudio] = {}
        self._clock = time.monotonic()
        self._last_written: tuple[int, int] | None = None  # (turn, sentence) of the last reply frame written
        self._hold: Hold | None = None  # a reply held by a pause command
        self.hold_policy = HoldPolicy()
        self.set_policy(PlaybackPolicy())
        self._playout: asyncio.Task[None] | None = None
        self._failed_sends = 0
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.turn_latencies: list[Any] = []  # TurnLatency records of this call, for the JSON API
        self.limits = limits or CallLimits()
        if self.limits.record_ms % FRAME_MS or self.limits.record_ms <= 0:
            raise ValueError(f"record_ms must be a multiple of {FRAME_MS} ms, not {self.limits.record_ms}")
        self._record_samples = FRAME_SAMPLES * (self.limits.record_ms // FRAME_MS)
        self.send_path = send_path
        # call_started on its own producer (ingress/runtime.py): not queued behind the node's audio batches
        self._start_publisher = start_publisher or publisher
        self._audio_budget = AudioBudget(BUS_RATE, self.limits.audio_speed, self.limits.audio_burst_s,
                                         started=connected_at)
        self._dtmf_budget = TokenBucket(self.limits.dtmf_per_s, max(self.limits.dtmf_per_s, 1.0))
        self.on_agent_audio: Callable[[], None] | None = None  # the socket's media timeout counts agent audio too

    def set_policy(self, policy: PlaybackPolicy) -> None:
        """The node's filler and drain settings (the egress sets them when it registers the call)."""
        self.policy = policy
        self._cue = SpeechCue(policy)
        self._silence = SilenceTimer(SilencePolicy.of(policy))

    # -- lifecycle ---------------------------------------------------------
    def _event(self, kind: CallEventKind, turn_seq: int | None = None, reason: str | None = None) -> CallEvent:
        return self.info.event(kind, self.node, self.reply_partition, turn_seq, reason)

    async def start(self) -> None:
        span = tracing.call_start(self.info.call_id, self.info.channel)
        if span is not None:  # the call's trace starts here: every record of the call descends from this span
            self.corr = tracing.stamp(self.corr, span)
            self._audio_window = tracing.AudioWindow(self.corr)
        try:
            await (await self._start_publisher.send(self._event(CallEventKind.CALL_STARTED), self.corr))
        finally:
            tracing.end(span)
        metrics.CALLS.labels(self.info.channel).inc()
        metrics.ACTIVE_CALLS.labels(self.info.channel).inc()
        self._playout = asyncio.create_task(self._play(), name=f"playout-{self.info.call_id}")
        logger.info("call started", extra={"fields": {"channel": self.info.channel, "partition": self.reply_partition}})

    async def end(self, reason: str) -> None:
        """Idempotent: the call's last event, whatever ended it."""
        if self.ended.is_set():
            return
        self.ended.set()
        self.end_reason = reason
        try:
            await self._flush_audio()
        except Exception:
            logger.exception("could not publish the call's last audio")
        if self._playout:
            self._playout.cancel()
        metrics.ACTIVE_CALLS.labels(self.info.channel).dec()
        # an ended call may be kept a while for its latencies (JSON API): not its connection, buffers or audio
        self.socket, self.on_agent_audio = HungUp(), None
        self._queue.clear()
        self._replies.clear()
        if self._audio_window is not None:
            self._audio_window.close("call_ended")
        try:
            await (await self.publisher.send(self._event(CallEventKind.CALL_ENDED, reason=reason), self.corr))
        except Exception:
            logger.exception("could not publish call_ended")
        logger.info("call ended", extra={"fields": {"reason": reason}})

    async def dtmf(self, digits: str) -> None:
        """Key presses of one message: DTMF characters only, at most ``dtmf_digits`` of them and
        ``dtmf_per_s`` per second, so one message cannot become thousands of records."""
        valid = [d for d in digits if d in DTMF_DIGITS]
        taken = valid[: self.limits.dtmf_digits]
        taken = taken[: int(self._dtmf_budget.take(len(taken)))]
        if len(taken) < len(digits):
            metrics.BAD_INPUT.labels(self.info.channel, "dtmf_dropped").inc(len(digits) - len(taken))
        for digit in taken:
            if self.ended.is_set():
                return
            self._silence.heard(time.monotonic())
            if digit == HANDOFF_KEY:  # the agent hands off at once (processors/agent/policy.py): the call's end reason
                self._agent_end_reason = "handoff"
            # numbered like a turn, after every turn so far: the agent's answer to the key plays in order
            event = self._event(CallEventKind.DTMF, self._input_turn(), reason=digit)
            await self.publisher.send(event, self.corr.child(event.turn_seq or 0))

    def _input_turn(self) -> int:
        """A turn_seq for a key press or a silence: after every reply accepted so far, and before the caller's next
        turn (the turns processor numbers a turn by its first voiced frame + 1, so from frames_taken + 1 on)."""
        self._input_seq = max(self.frames_taken, self._newest_turn + 1, self._input_seq + 1)
        return self._input_seq

    # -- caller audio in ---------------------------------------------------
    def _sent(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self._failed_sends += 1
            metrics.BAD_INPUT.labels(self.info.channel, "publish_failed").inc()

    async def caller_audio(self, samples: np.ndarray, arrived_us: int | None = None) -> None:
        """Bus-rate samples from the caller, any length; published in records of ``record_ms``, at most
        ``audio_speed`` × the call's age (the excess is dropped and counted: no caller makes the bus
        carry minutes of audio in a second). Never waits on Kafka: records go to the node's send path.
        ``arrived_us``: when the first of these samples arrived, if a channel gathered them (default now)."""
        if self.ended.is_set():
            return  # nothing is published for a call that has ended
        allowed = self._audio_budget.allow(len(samples))
        if allowed < len(samples):
            metrics.BAD_INPUT.labels(self.info.channel, "audio_too_fast").inc()
            metrics.CALLER_AUDIO_DROPPED.labels(self.info.channel).inc((len(samples) - allowed) / BUS_RATE)
            samples = samples[:allowed]
        if not len(samples):
            return
        if self._playing_turn is not None or self._queue:
            self._cue.reset()  # speech over agent audio (or its echo) is not a turn waiting for an answer
        elif self._cue.hear(samples):
            self._wake.set()  # the player now has a filler deadline to keep
        now = now_us()
        if len(self._pending_in):
            buf = np.concatenate([self._pending_in, samples])
        else:
            buf, self._pending_ts = samples, now if arrived_us is None else min(arrived_us, now)
        size = self._record_samples
        n = len(buf) // size
        for i in range(n):
            # a record's time is its first frame's arrival; those after the first began in this message
            await self._publish_audio(buf[i * size : (i + 1) * size], self._pending_ts if i == 0 else now)
        if n:
            self._pending_ts = now
        self._pending_in = buf[n * size :].copy()

    @property
    def frames_taken(self) -> int:
        """Caller audio taken off the socket so far, in 20 ms frames (published, or gathering into a record)."""
        return self._seq + len(self._pending_in) // FRAME_SAMPLES

    async def _publish_audio(self, samples: np.ndarray, ts_us: int) -> None:
        """One record: ``seq`` is the call's number of its first 20 ms frame, so frame k of it is seq + k."""
        record = AudioFrame(
            self.info.call_id, self._seq, ts_us, BUS_RATE, array_to_pcm16(samples), self.reply_partition,
            self._playing_turn,
        )
        self._seq += len(samples) // FRAME_SAMPLES
        corr = self.corr if self._audio_window is None else self._audio_window.corr(len(samples) // FRAME_SAMPLES)
        if self.send_path is not None:
            # the Kafka timestamp is when the record was complete: the audio.in hop then counts the wait in the
            # send path, not the record's own gathering (its first frame's arrival is ts_us)
            self.send_path.offer(record, corr, self.info.channel, now_us() // 1000, self._sent)
        else:
            (await self.publisher.send(record, corr)).add_done_callback(self._sent)

    async def _flush_audio(self) -> None:
        """At the end of a call: publish the whole 20 ms frames still gathering into a record (a short last
        record: the end of the caller's speech matters most), and let the send path hand over the call's
        audio before call_ended follows it."""
        whole = len(self._pending_in) // FRAME_SAMPLES * FRAME_SAMPLES
        if whole:
            await self._publish_audio(self._pending_in[:whole], self._pending_ts)
        self._pending_in = np.zeros(0, dtype=np.int16)
        if self.send_path is not None and not await self.send_path.flushed(self.info.call_id, 2.0):
            logger.warning("call ended with caller audio still queued for the producer",
                           extra={"fields": {"samples": self.send_path.waiting(self.info.call_id)}})

    # -- agent audio out ---------------------------------------------------
    def agent_audio(self, out: AudioOut, traceparent: str = "") -> None:
        """Queue a reply's audio or END; keep the call's filler. Idempotent: a record TTS re-emits after a restart
        repeats its (turn_seq, seq) and is dropped, and audio of a reply older than one already accepted is stale."""
        if self.ended.is_set():
            return
        if out.kind is AudioOutKind.FILLER:
            if self._filler is None and out.pcm:  # the first one: TTS re-sends it when it replays call_started
                self._filler = np.frombuffer(out.pcm, dtype="<i2")
            return
        if out.turn_seq <= self._cleared_through:
            return
        if out.turn_seq < self._newest_turn or (out.turn_seq == self._newest_turn and out.seq <= self._newest_seq):
            metrics.AGENT_AUDIO_DROPPED.labels("stale" if out.turn_seq < self._newest_turn else "duplicate").inc()
            return
        drained_turn, drained_at = self._drained
        if out.turn_seq == drained_turn and self._cue.last_loud > drained_at and out.kind is AudioOutKind.AUDIO:
            # the rest of a reply that drained (TTS died mid-reply and came back): the caller has spoken since, so it
            # is stale; played now it would talk over them, and their words would be taken for a barge-in
            metrics.AGENT_AUDIO_DROPPED.labels("late").inc()
            return
        self._newest_turn, self._newest_seq = out.turn_seq, out.seq
        samples = np.frombuffer(out.pcm, dtype="<i2") if out.pcm else np.zeros(0, dtype=np.int16)
        reply = self._reply(out.turn_seq)
        if out.kind is AudioOutKind.END:
            reply.ended = True
        else:
            reply.receive(out.seq, len(samples))
        self._queue.append(Chunk(out.turn_seq, samples, out.kind is AudioOutKind.END, out.end_call, out.timings,
                                  trace=(traceparent, time.time_ns()) if traceparent else None, seq=out.seq))
        self._wake.set()

    def _requeue(self, turn_seq: int, seq: int, samples: np.ndarray) -> None:
        """Audio the phone had not played, back at the head of the queue (ingress/holding.py)."""
        self._queue.appendleft(Chunk(turn_seq, samples, seq=seq))

    async def playback(self, cmd: PlaybackCommand) -> None:
        if self.ended.is_set():
            return
        if cmd.kind is PlaybackKind.PAUSE:
            return await self._pause(cmd)
        if cmd.kind is PlaybackKind.RESUME:
            if self._hold is not None and self._hold.turn_seq <= cmd.through_turn_seq:
                await self._resume("resume")
            return
        self._cleared_through = max(self._cleared_through, cmd.through_turn_seq)
        now, turn = time.monotonic(), self._playing_turn
        held, self._hold = self._hold, None
        was_playing = turn is not None and turn <= self._cleared_through
        if was_playing and held is None:
            self._take_back(turn, now)  # not heard: it goes with the rest
        heard = self._replies[turn].heard(BUS_RATE) if was_playing and turn in self._replies else {}
        dropped = len(self._queue)
        self._queue = deque(c for c in self._queue if c.turn_seq > self._cleared_through)
        self._replies = {t: r for t, r in self._replies.items() if t > self._cleared_through}
        self._wake.set()
        if was_playing or dropped:
            if held is None:
                await self.socket.send_clear()
                reaction = (now_us() - cmd.speech_onset_us) / 1e6
                metrics.BARGE_IN_REACTION.observe(max(0.0, reaction))
            else:  # the socket was cleared at the pause: that was the reaction the caller heard
                metrics.PLAYBACK_HOLDS.labels("cleared").inc()
                reaction = held.reaction_s
            turn = turn if turn is not None else cmd.through_turn_seq
            self._playing_turn = None
            self._silence.played(time.monotonic())  # cut short: if no answer follows, the caller's silence counts
            reason = f"barge_in reaction {reaction * 1000:.0f} ms"  # sinks/rows.py reads the reaction from this
            event = self._event(CallEventKind.PLAYBACK_CLEARED, turn, reason=reason)
            event.attributes = {**event.attributes, **heard}
            await self.publisher.send(event, self.corr.child(turn))

    async def _first_audio(self, chunk: Chunk) -> None:
        if self.ended.is_set():
            return
        self._started_turns.add(chunk.turn_seq)
        if chunk.turn_seq not in self._silence.turns:  # the prompt's own audio does not restart the caller's silence
            self._silence.speaking()
        corr = self.corr.child(chunk.turn_seq)
        span = None if chunk.trace is None else tracing.first_audio(chunk.trace, self.info.call_id, chunk.turn_seq)
        corr = tracing.stamp(corr, span)
        if self._audio_window is not None:  # the agent answers: the caller's audio so far was what it answers
            self._audio_window.close("reply")
        await self.publisher.send(self._event(CallEventKind.PLAYBACK_STARTED, chunk.turn_seq), corr)
        if chunk.timings is not None:
            t = replace(chunk.timings, egress_first_audio_us=now_us())
            lat = turn_latency(self.info.call_id, chunk.turn_seq, t, now_us())
            self.turn_latencies.append(lat)
            for value, hist in (
                (lat.response_ms, metrics.RESPONSE_LATENCY),
                (lat.processing_ms, metrics.PROCESSING_LATENCY),
                (lat.bus_overhead_ms, metrics.BUS_OVERHEAD),
            ):
                if value is not None:
                    hist.observe(value / 1000)
            await self.publisher.send(lat, corr)
        tracing.end(span)

    async def _play(self) -> None:
        """Write queued agent audio at real-time pace, at most ``lead`` ahead; while nothing is queued, finish a
        reply whose END never came and play the filler when it is due (``_idle``); while a reply is held by a pause,
        write nothing (``_held``). ``self._clock`` is when the next frame written will play on the phone."""
        self._clock = time.monotonic()
        loop_corr = correlation(**self.corr.log_ids())
        with loop_corr:
            while True:
                if self._hold is not None:
                    await self._held()
                    continue
                if not self._queue:
                    if self._playing_turn is not None and self._reply_done:
                        await asyncio.sleep(max(0.0, self._clock - time.monotonic()))
                        if not self._queue and self._hold is None and self._playing_turn is not None:
                            await self._finished(self._playing_turn)
                        continue
                    await self._idle(self._clock)
                    if self._queue:
                        self._clock = max(self._clock, time.monotonic())
                    continue
                chunk = self._queue[0]
                if chunk.end:
                    self._queue.popleft()
                    # the reply's last sentence ends at its reply mark (one mark per sentence *boundary* before it)
                    await self.socket.send_mark(f"reply-{chunk.turn_seq}")
                    self._last_written = None
                    self._reply_done = True
                    if chunk.end_call:
                        await asyncio.sleep(max(0.0, self._clock - time.monotonic()))
                        await self._finished(chunk.turn_seq)
                        await self.socket.close(1000, "agent ended the call")
                        await self.end(self._agent_end_reason)
                        return
                    continue
                if not chunk.filler:  # the filler is no reply: frames carry no agent_turn_seq, talking over it is fine
                    if chunk.turn_seq not in self._started_turns:
                        await self._first_audio(chunk)
                    self._playing_turn = chunk.turn_seq
                    self._reply_done = False
                    self._cue.reset()  # a reply started: no filler for the caller's speech before it
                ahead = self._clock - time.monotonic() - self._lead_s
                if ahead > 0:
                    await asyncio.sleep(ahead)
                    continue  # a pause or a clear may have come meanwhile: look again
                if not chunk.filler:
                    await self._sentence_boundary(chunk.turn_seq, chunk.seq)
                frame, rest = chunk.samples[:FRAME_SAMPLES], chunk.samples[FRAME_SAMPLES:]
                filler_ends = chunk.filler and not len(rest)
                if len(rest):
                    chunk.samples = rest
                else:
                    self._queue.popleft()
                if not chunk.filler:  # counted before the await: a clear during the write takes it back with the rest
                    self._reply(chunk.turn_seq).wrote(chunk.seq, frame)
                if len(frame) < FRAME_SAMPLES:
                    frame = np.pad(frame, (0, FRAME_SAMPLES - len(frame)))
                self._clock = max(self._clock, time.monotonic() - self._lead_s) + FRAME_MS / 1000
                await self.socket.send_audio(frame)
                if filler_ends:
                    await self.socket.send_mark(FILLER_MARK)
                if self.on_agent_audio is not None:
                    self.on_agent_audio()

    async def _idle(self, clock: float) -> None:
        """Nothing queued: wait for agent audio, but no longer than the drain grace of a reply still playing (its END
        may be lost: TTS died after its audio), the filler's due time or the silence timer's; then act on whichever
        came."""
        now = time.monotonic()
        playing = self._playing_turn
        drain_at = clock + self.policy.end_grace_s if playing is not None else None
        filler_at = self._cue.due_at() if playing is None else None
        silence_at = self._silence.due_at(self._cue.last_loud) if playing is None else None
        due = min((t for t in (drain_at, filler_at, silence_at) if t is not None), default=None)
        if due is not None and due <= now:
            if playing is not None:
                # the reply's audio has played out and no END came: finish it, so the caller's next words are a
                # new turn (frames without agent_turn_seq), not a barge-in on a reply that is over
                metrics.PLAYBACK_DRAINED.inc()
                self._drained = (playing, now)
                await self._finished(playing, drained=True)
            elif filler_at is not None and filler_at <= now:
                await self._filler_due()
            else:
                await self._silence_due(now)
            return
        self._wake.clear()
        try:
            async with asyncio.timeout(None if due is None else due - now):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _silence_due(self, now: float) -> None:
        """The caller has been silent since the agent's reply played (ingress/silence.py): ask the agent to prompt
        them or let them go; if its goodbye never came, close the call here."""
        silent_s = self._silence.silent_s(now)
        stage = self._silence.fire(now, self._cue.last_loud)
        if stage is None or self.ended.is_set():
            return
        metrics.SILENCE_EVENTS.labels(stage).inc()
        if stage == CLOSE:
            logger.warning("silent caller: the agent's goodbye never came; closing the call")
            await self.socket.close(1000, "caller silent")
            await self.end("silence")
            return
        if stage != PROMPT:
            self._agent_end_reason = "silence"
        turn = self._input_turn()
        self._silence.turns.add(turn)
        event = self._event(CallEventKind.SILENCE, turn, reason=f"caller silent {silent_s:.1f} s")
        event.attributes = {**event.attributes, "silent_s": f"{silent_s:.1f}", "stage": stage}
        logger.info("silent caller", extra={"fields": {"stage": stage, "silent_s": round(silent_s, 1)}})
        await self.publisher.send(event, self.corr.child(turn))

    async def _filler_due(self) -> None:
        """The caller finished speaking ``filler_after_s`` ago and no agent audio has started: the filler, once."""
        self._cue.reset()  # once per turn: the cue re-arms only on new speech
        if self.ended.is_set():
            return
        if self._filler is None:
            metrics.FILLERS.labels("unavailable").inc()
            logger.warning("filler due but none held for this call (TTS never sent it)")
            return
        metrics.FILLERS.labels("no_agent_audio").inc()
        self._queue.append(Chunk(FILLER_TURN, self._filler, filler=True))
        event = self._event(CallEventKind.PLAYBACK_STARTED,
                            reason=f"filler: no agent audio {self.policy.filler_after_s:g} s after the caller spoke")
        event.attributes = {**event.attributes, "playback": "filler"}
        await self.publisher.send(event, self.corr)

    async def _finished(self, turn_seq: int, drained: bool = False) -> None:
        self._playing_turn = None
        self._replies = {t: r for t, r in self._replies.items() if t > turn_seq}
        if turn_seq not in self._silence.turns:  # the agent has had its say: the caller's silence counts from here
            self._silence.played(time.monotonic())
        if self.ended.is_set() or turn_seq <= self._finished_through:
            return
        self._finished_through = turn_seq
        reason = f"drained: no end of reply {self.policy.end_grace_s:g} s after its audio" if drained else None
        await self.publisher.send(self._event(CallEventKind.PLAYBACK_FINISHED, turn_seq, reason=reason),
                                  self.corr.child(turn_seq))
