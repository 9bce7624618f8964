"""Silence and the keypad end to end (README "Silence and the keypad"): the whole pipeline as subprocesses on the real
broker, a caller on a Twilio media stream, real speech (Piper) where a turn is spoken."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import websockets

from switchboard.audio import BUS_RATE, Resampler
from switchboard.caller import FRAME, BusObserver, TwilioCaller, non_silent
from switchboard.records import CallEvent, CallEventKind
from switchboard.stack import Stack
from switchboard.topics import CALLS
from switchboard.twilio_client import open_media_stream
from tests.pipeline import running_stack
from tests.security.lone import all_records

pytestmark = pytest.mark.slow
SPINE = ("ingress", "turns", "stt", "agent", "tts")
PROMPT_S, HANGUP_S = 3.0, 6.0


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory) -> Iterator[Stack]:
    with running_stack(broker, tmp_path_factory.mktemp("keypad"), only=SPINE,
                       SWITCHBOARD_SILENCE_PROMPT_S=str(PROMPT_S), SWITCHBOARD_SILENCE_HANGUP_S=str(HANGUP_S)) as s:
        yield s


class Phone:
    """A Twilio caller driven step by step: the line carries silence in real time unless the test speaks or keys."""

    def __init__(self, stack: Stack) -> None:
        settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
        self.settings = settings
        self.caller = TwilioCaller(f"ws://127.0.0.1:{stack.ingress_port}/twilio/media", settings,
                                   credentials=stack.client_credentials)
        self.result = self.caller.result
        self.observer = BusObserver(settings, self.caller.call_id, self.result)
        self.clock = 0.0
        self.marked: dict[str, float] = {}  # mark name → when the caller got it (the reply's audio had all come)
        self._receiver: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Phone:
        await self.observer.start()
        c = self.caller
        ws, params = await open_media_stream(c.http_base, c.credentials, call_sid=c.call_id)
        c._ws = ws
        self._receiver = asyncio.create_task(c._receive())
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(c._msg("start", start={
            "accountSid": "AC" + "0" * 32, "streamSid": c.stream_sid, "callSid": c.call_id, "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}))
        self.clock = time.monotonic()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.result.close_code is None:
            try:
                await self.caller._ws.send(self.caller._msg("stop", stop={"callSid": self.caller.call_id}))
                await self.caller._ws.close()
            except websockets.ConnectionClosed:
                pass
        if self._receiver is not None:
            await asyncio.wait_for(self._receiver, 5)
        self.caller._flush_reply()
        await self.observer.stop()

    async def until(self, done: Callable[[], bool], timeout_s: float) -> float:
        """Keep the line open (silence, 100 ms at a time) until ``done()`` or the call closes; returns when."""
        silence = np.zeros(FRAME * 5, dtype=np.int16)
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "timed out"
            if self.result.close_code is not None:
                break
            self.clock = await self.caller._send_audio(silence, self.clock)
            for name in self.result.marks:
                self.marked.setdefault(name, time.monotonic())
        return time.monotonic()

    async def say(self, samples: np.ndarray) -> None:
        self.clock = await self.caller._send_audio(Resampler(BUS_RATE, 8000).process(samples), self.clock)

    async def key(self, digit: str) -> None:
        await self.caller._ws.send(self.caller._msg("dtmf", dtmf={"track": "inbound_track", "digit": digit}))

    def said(self) -> list[str]:
        return [s for turn in sorted(self.result.replies) for s in self.result.replies[turn]]

    def closed(self) -> bool:
        return self.result.close_code is not None

    async def ended(self) -> CallEvent:
        for _ in range(20):
            found = [e for e in await all_records(self.settings, CALLS, self.caller.call_id)
                     if isinstance(e, CallEvent) and e.kind is CallEventKind.CALL_ENDED]
            if found:
                return found[0]
        raise AssertionError("no call_ended")


async def test_a_silent_caller_is_prompted_then_let_go_and_the_call_ends_as_silence(stack):
    async with Phone(stack) as phone:
        greeted = await phone.until(lambda: "reply-0" in phone.result.marks, 30)
        prompted = await phone.until(lambda: "Are you still there?" in phone.said(), PROMPT_S + 10)
        closed = await phone.until(phone.closed, HANGUP_S + 10)
    print(f"\nprompt {prompted - greeted:.2f} s, close {closed - greeted:.2f} s after the greeting played "
          f"(settings {PROMPT_S} s, {HANGUP_S} s)")
    assert PROMPT_S - 0.5 < prompted - greeted < PROMPT_S + 2.0
    assert HANGUP_S - 0.5 < closed - greeted < HANGUP_S + 5.0  # the goodbye (about 2 s) plays before the close
    assert phone.said()[-2:] == ["Are you still there?", "I'll let you go now. Goodbye."]
    assert phone.result.close_code == 1000
    assert len(phone.result.agent_audio) >= 3 and all(non_silent(a) for a in phone.result.agent_audio[-2:])
    assert (await phone.ended()).reason == "silence"


async def test_a_caller_who_presses_0_is_handed_off(stack):
    async with Phone(stack) as phone:
        await phone.until(lambda: "reply-0" in phone.result.marks, 30)
        await phone.key("0")
        await phone.until(phone.closed, 15)
    assert phone.said()[-2:] == ["Let me put you through to one of our staff.", "Please hold."]
    assert phone.result.close_code == 1000
    assert (await phone.ended()).reason == "handoff"


async def test_pressing_1_at_the_confirmation_books_the_appointment(stack, piper):
    async with Phone(stack) as phone:
        await phone.until(lambda: "reply-0" in phone.result.marks, 30)
        await phone.say(piper("I'd like to book an appointment on Tuesday at 10 a.m."))
        await phone.until(lambda: "Is that right?" in phone.said(), 20)
        await phone.key("1")
        await phone.until(lambda: any("You're booked" in s for s in phone.said()), 15)
    assert "You're booked for Tuesday at 10 AM." in phone.said()


@pytest.fixture(scope="module")
def piper() -> Callable[[str], np.ndarray]:
    from processors.tts.piper import PiperEngine

    engine = PiperEngine()
    return lambda text: np.concatenate([engine._synthesize(text), np.zeros(BUS_RATE // 2, dtype=np.int16)])
