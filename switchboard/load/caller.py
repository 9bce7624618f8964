"""One lightweight Twilio caller of the load generator, measured on the client side.

No Kafka consumer per caller (that would not scale to hundreds of calls): everything is timed
from what crosses the caller's own socket.

- greeting latency: ``start`` sent → first agent media frame received;
- response latency: the caller's last voiced frame sent → first agent media of the answer;
- barge-in reaction: speech onset sent while agent audio is arriving → ``clear`` received.

Frames are paced in real time (20 ms) on a per-caller clock, so calls are not phase-aligned. If
the generator itself falls behind (a busy machine) no frame is skipped: the schedule slides and
the lag is reported, so a slow generator is never mistaken for a slow pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from switchboard.load.scenario import FRAME_S, SILENCE_PAYLOAD, CallPlan, Clip
from switchboard.load.target import Target, open_stream
from switchboard.records import FILLER_MARK

QUIET_S = 0.5  # a reply is over once its mark came and no audio arrived for this long
# The agent answered part of an utterance while the caller was still saying it (the pipeline ended the
# turn at a pause inside it): after the caller's speech, this long a silence ends the wait for more.
EARLY_GRACE_S = 3.0
BARGE_IN_AFTER_S = 1.0  # a barge-in caller starts talking this long into the greeting
# A frame cut before a clear may still follow it; an answer cannot come this soon (the caller is
# still talking when playback is cleared, and a turn ends only after its silence).
STALE_AFTER_CLEAR_S = 0.5
LAG_RESET_S = 0.2  # behind schedule by more than this: restart the clock instead of bursting
REJECTED = 1013  # the ingress refuses a call over its admission limit or while draining


@dataclass
class CallRecord:
    """What one call measured. Times are seconds since the run started (``t``) or durations (``_s``)."""

    index: int
    call_id: str
    silent: bool
    planned_turns: int
    barge_in: bool = False
    started_t: float | None = None
    ended_t: float | None = None
    connect_s: float | None = None
    greeting_s: float | None = None
    responses: list[tuple[float, float]] = field(default_factory=list)  # (t at end of speech, latency)
    barge_ins: list[tuple[float, float]] = field(default_factory=list)  # (t at onset, reaction)
    barge_ins_missed: int = 0
    early_answers: int = 0  # turns the agent answered while the caller was still speaking
    turns_spoken: int = 0
    turns_answered: int = 0
    frames_sent: int = 0
    agent_frames: int = 0  # agent media frames received
    marks: int = 0  # replies played to their end (each ends with a mark, echoed back)
    fillers: int = 0  # "One moment, please." heard because an answer was late (never counted as the answer)
    clears: int = 0
    max_lag_s: float = 0.0
    close_code: int | None = None
    close_reason: str = ""
    ended_by: str = ""  # caller | agent | server | cap
    error: str = ""  # empty, or a short category: see ``errors()``

    @property
    def admitted(self) -> bool:
        return self.started_t is not None and self.close_code != REJECTED and not self.error.startswith("connect")

    @property
    def answered(self) -> bool:
        """Greeted, and every turn it said was answered, to the end of its script or until the agent hung up."""
        if not self.admitted or self.greeting_s is None:
            return False
        if self.silent:
            return True
        finished = self.turns_spoken == self.planned_turns or self.ended_by == "agent"
        return finished and self.turns_answered == self.turns_spoken and self.turns_spoken > 0

    def errors(self) -> list[str]:
        out = [self.error] if self.error else []
        if self.admitted and self.greeting_s is None:
            out.append("no_greeting")
        if self.turns_answered < self.turns_spoken:
            out.append("unanswered_turn")
        if self.barge_ins_missed:
            out.append("barge_in_not_cleared")
        return out


class LoadCaller:
    def __init__(
        self,
        plan: CallPlan,
        target: Target,
        t0: float,
        stop: asyncio.Event,
        http: httpx.AsyncClient,
        *,
        reply_timeout_s: float = 20.0,
        on_active: Callable[[int], None] = lambda delta: None,
    ) -> None:
        self.plan, self.target, self.t0, self.stop, self.http = plan, target, t0, stop, http
        self.reply_timeout_s = reply_timeout_s
        self._on_active = on_active  # the run's count of calls in progress
        self.stream_sid = f"MZ{secrets.token_hex(16)}"
        self.rec = CallRecord(plan.index, f"CA{secrets.token_hex(16)}", plan.silent, len(plan.turns), plan.barge_in)
        self._ws: Any = None
        self._seq = 0
        self._chunk = 0
        self._clock = 0.0
        self._closed = False
        self._script_finished = False
        self._start_sent = 0.0
        # receiver state
        self._first_media: float | None = None
        self._last_media = 0.0
        self._boundary = True  # a mark or clear came since the last agent frame (or none came yet)
        self._cleared_at = -1.0
        self._marks = 0
        self._turn_onset: float | None = None  # speech onset of the current turn
        self._early = False  # an agent reply started between the turn's onset and its end of speech
        self._answer_wanted_after: float | None = None  # end of speech of the current turn
        self._answer_at: float | None = None
        self._marks_at_answer = 0
        self._onset: float | None = None  # barge-in pending: speech onset over agent audio

    # -- helpers -------------------------------------------------------------
    def _t(self, now: float) -> float:
        return round(now - self.t0, 4)

    def _text(self, event: str, body_key: str, body: dict[str, Any]) -> str:
        self._seq += 1
        return json.dumps({"event": event, "sequenceNumber": str(self._seq), "streamSid": self.stream_sid,
                           body_key: body})

    async def _send_frame(self, payload: str) -> bool:
        """One 20 ms media message at its time; False once the socket is closed."""
        now = time.monotonic()
        delay = self._clock - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > LAG_RESET_S:
            self.rec.max_lag_s = max(self.rec.max_lag_s, -delay)
            self._clock = now
        self._seq += 1
        # Hand-built: json.dumps per frame would be the generator's largest cost at 500 callers.
        msg = (
            f'{{"event":"media","sequenceNumber":"{self._seq}","streamSid":"{self.stream_sid}",'
            f'"media":{{"track":"inbound","chunk":"{self._chunk}","timestamp":"{self._chunk * 20}",'
            f'"payload":"{payload}"}}}}'
        )
        try:
            await self._ws.send(msg)
        except websockets.ConnectionClosed:
            self._closed = True
            return False
        self._chunk += 1
        self.rec.frames_sent += 1
        self._clock += FRAME_S
        return True

    def _live(self) -> bool:
        return not self._closed and not self.stop.is_set()

    async def _silence_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._live() and not done():
            if time.monotonic() > deadline:
                return False
            if not await self._send_frame(SILENCE_PAYLOAD):
                break
        return done()

    # -- receiving -----------------------------------------------------------
    def _in_reply(self) -> bool:
        """Agent audio is playing: a frame came and no mark or clear since (a stalled stream still plays)."""
        return not self._boundary

    async def _receive(self) -> None:
        try:
            async for raw in self._ws:
                now = time.monotonic()
                msg = json.loads(raw)
                event = msg.get("event")
                if event == "media":
                    if self._first_media is None:
                        self._first_media = now
                        self.rec.greeting_s = round(now - self._start_sent, 4)
                    self.rec.agent_frames += 1
                    if now - self._cleared_at < STALE_AFTER_CLEAR_S:
                        continue  # a frame already on its way when playback was cleared
                    # Replies are delimited by the ingress: each ends with its mark, or is cut by a clear. So a
                    # new reply is the first frame after a boundary, whatever gaps a stalled stream has.
                    new_reply = self._boundary
                    self._boundary = False
                    self._last_media = now
                    if new_reply and self._answer_wanted_after is not None and self._answer_at is None:
                        self._answer_at, self._marks_at_answer = now, self._marks
                    elif new_reply and self._turn_onset is not None and self._answer_wanted_after is None:
                        self._early = True
                elif event == "mark":
                    name = (msg.get("mark") or {}).get("name", "")
                    if name == FILLER_MARK:
                        self._filler_played()
                    elif not name.startswith("s"):  # a reply's end; s{turn}.{sentence} only ends one of its sentences
                        self._marks += 1
                        self.rec.marks += 1
                        self._boundary = True
                    with contextlib.suppress(websockets.ConnectionClosed):  # Twilio echoes a mark once played
                        await self._ws.send(self._text("mark", "mark", {"name": name}))
                elif event == "clear":
                    self.rec.clears += 1
                    self._boundary = True
                    self._cleared_at = now
                    if self._onset is not None:
                        self.rec.barge_ins.append((self._t(self._onset), round(now - self._onset, 4)))
                        self._onset = None
        except websockets.ConnectionClosed:
            pass  # an abnormal close; the close code is read below
        finally:
            self._closed = True
            self.rec.close_code = self._ws.close_code
            self.rec.close_reason = (self._ws.close_reason or "")[:120]

    def _filler_played(self) -> None:
        """The audio since the last boundary was the ingress's filler, not an answer: the answer is the next reply.
        (The filler only starts while no agent audio plays, so it always began at a boundary.)"""
        self.rec.fillers += 1
        self._boundary = True
        if self._answer_at is not None and self._marks == self._marks_at_answer:
            self._answer_at = None

    def _reply_over(self) -> bool:
        now = time.monotonic()
        if self._answer_at is not None:
            return self._marks > self._marks_at_answer and now - self._last_media > QUIET_S
        if self._early and self._answer_wanted_after is not None:  # answered early: wait out that reply
            return not self._in_reply() and now - max(self._answer_wanted_after, self._last_media) > EARLY_GRACE_S
        return False

    # -- the call --------------------------------------------------------------
    async def _say(self, clip: Clip) -> None:
        self._answer_wanted_after, self._answer_at, self._onset = None, None, None
        self._turn_onset, self._early = None, False
        for i, payload in enumerate(clip.payloads):
            if i == clip.first_voiced:
                self._turn_onset = time.monotonic()
                if self._in_reply():
                    self._onset = self._turn_onset  # talking over the agent: expect a clear
            if not self._live() or not await self._send_frame(payload):
                return
            if i == clip.last_voiced:
                self._answer_wanted_after = time.monotonic()
                self.rec.turns_spoken += 1
        end_of_speech = self._answer_wanted_after
        if end_of_speech is None:
            return
        await self._silence_until(self._reply_over, self.reply_timeout_s)
        if self._onset is not None:  # a slow clear may come after the speech: it had until the answer ended
            self.rec.barge_ins_missed += 1
            self._onset = None
        if self._answer_at is not None:
            self.rec.turns_answered += 1
            self.rec.responses.append((self._t(end_of_speech), round(self._answer_at - end_of_speech, 4)))
        elif self._early:  # answered, but before the caller had finished: no response latency to sample
            self.rec.turns_answered += 1
            self.rec.early_answers += 1

    async def _script(self) -> None:
        plan = self.plan
        if plan.silent:
            while self._live() and await self._send_frame(SILENCE_PAYLOAD):
                pass
            return
        if plan.barge_in:
            heard = await self._silence_until(lambda: self._first_media is not None, self.reply_timeout_s)
            if heard:
                await self._silence_until(lambda: False, BARGE_IN_AFTER_S)
        else:
            greeting_over = lambda: self._marks > 0 and time.monotonic() - self._last_media > QUIET_S  # noqa: E731
            await self._silence_until(greeting_over, self.reply_timeout_s)
        for clip in plan.turns:
            if not self._live():
                return
            await self._say(clip)

    async def run(self) -> CallRecord:
        rec = self.rec
        number = f"+1555{self.plan.index:07d}"
        t_dial = time.monotonic()
        try:
            self._ws, params = await asyncio.wait_for(open_stream(self.target, rec.call_id, number, self.http), 15)
        except Exception as exc:  # refused, unreachable, 403 on the signed webhook: a result, not a crash
            rec.error = f"connect_failed: {type(exc).__name__}: {str(exc)[:80]}"
            return rec
        rec.connect_s = round(time.monotonic() - t_dial, 4)
        receiver = asyncio.create_task(self._receive())
        self._on_active(1)
        try:
            await self._ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.stream_sid,
                "callSid": rec.call_id,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }
            await self._ws.send(self._text("start", "start", start))
            self._start_sent = self._clock = time.monotonic()
            rec.started_t = self._t(self._start_sent)
            await self._script()
            self._script_finished = not self.stop.is_set() or self.plan.silent
        except websockets.ConnectionClosed:
            self._closed = True
        finally:
            try:
                await self._hang_up(receiver)
            finally:  # also when the run cancels a call that would not close
                if not receiver.done():
                    receiver.cancel()
                self._on_active(-1)
                rec.ended_t = self._t(time.monotonic())
        return rec

    async def _hang_up(self, receiver: asyncio.Task[None]) -> None:
        rec = self.rec
        if not self._closed:
            rec.ended_by = "caller" if self._script_finished else "cap"
            if not self._script_finished:
                rec.error = "cut_by_duration"
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._ws.send(self._text("stop", "stop", {"accountSid": "AC" + "0" * 32,
                                                               "callSid": rec.call_id}))
                await self._ws.close()
        try:
            await asyncio.wait_for(receiver, 5)
        except TimeoutError:
            receiver.cancel()
        if not rec.ended_by:
            code = rec.close_code
            rec.ended_by = "agent" if code == 1000 else "server"
            if code == REJECTED:
                rec.error = f"rejected: {rec.close_reason}"
            elif code != 1000:
                rec.error = f"closed_by_server: {code}"
