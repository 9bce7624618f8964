"""The end of a reply is idempotent at the ingress, and a lost one never turns the caller's next words into a barge-in
(ingress/calls.py, ingress/filler.py; README "Faults the caller hears").

The real ingress (in this process) on the real broker, a caller on a Twilio media stream sending 20 ms frames in real
time, as a phone line does; the test plays TTS: it produces ``audio.out`` records to the call's reply partition."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from ingress.calls import CallSession
from switchboard.audio import BUS_RATE, array_to_pcm16, mulaw_decode, mulaw_encode
from switchboard.broker import EmbeddedBroker
from switchboard.bus import Correlation, Publisher, make_producer
from switchboard.records import AudioFrame, AudioOut, AudioOutKind, CallEvent, CallEventKind, now_us
from switchboard.topics import AUDIO_IN, CALLS
from tests.security.lone import Lone, all_records, lone_ingress, twilio_call

GRACE_MS = 300
FRAME_8K = 160


def tone(seconds: float, amplitude: float, rate: int = BUS_RATE, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def rms(frame: np.ndarray) -> float:
    return float(np.sqrt(np.mean(frame.astype(np.float64) ** 2)))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Line:
    """A caller's phone line: one 20 ms μ-law frame every 20 ms (silence unless ``say`` queued speech), and what the
    ingress writes back, each message with its arrival time (monotonic)."""

    ws: Any
    media: list[tuple[float, np.ndarray]] = field(default_factory=list)  # 8 kHz frames of agent audio
    marks: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    _speech: list[np.ndarray] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    speech_end: float = 0.0  # when the last frame of the newest speech was sent

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def say(self, samples_8k: np.ndarray) -> None:
        """Speak (in real time, on the line's clock); returns once the last frame has gone."""
        frames = [samples_8k[i : i + FRAME_8K] for i in range(0, len(samples_8k) - FRAME_8K + 1, FRAME_8K)]
        self._speech.extend(frames)
        while self._speech:
            await asyncio.sleep(0.01)

    async def _send(self) -> None:
        silence = base64.b64encode(b"\xff" * FRAME_8K).decode()
        clock, chunk = time.monotonic(), 0
        with contextlib.suppress(Exception):
            while True:
                if self._speech:
                    payload = base64.b64encode(mulaw_encode(self._speech.pop(0))).decode()
                    if not self._speech:
                        self.speech_end = time.monotonic()
                else:
                    payload = silence
                await self.ws.send(json.dumps({"event": "media", "streamSid": "MZ", "media": {
                    "track": "inbound", "chunk": str(chunk), "timestamp": str(chunk * 20), "payload": payload}}))
                chunk += 1
                clock += 0.02
                await asyncio.sleep(max(0.0, clock - time.monotonic()))

    async def _receive(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                msg, now = json.loads(raw), time.monotonic()
                if msg.get("event") == "media":
                    self.media.append((now, mulaw_decode(base64.b64decode(msg["media"]["payload"]))))
                elif msg.get("event") == "mark":
                    self.marks.append((now, msg["mark"]["name"]))
                elif msg.get("event") == "clear":
                    self.clears.append(now)

    def heard(self, since: float = 0.0, loud: float | None = None) -> list[tuple[float, np.ndarray]]:
        """Agent frames received after ``since``; with ``loud``, only those louder than it (RMS)."""
        return [(t, f) for t, f in self.media if t >= since and (loud is None or rms(f) > loud)]

    async def quiet(self, seconds: float, timeout_s: float = 20.0, expect_audio: bool = False) -> None:
        """Wait until no agent audio has come for ``seconds`` (with ``expect_audio``, after some more has come)."""
        deadline = time.monotonic() + timeout_s
        heard = len(self.media)
        while expect_audio and len(self.media) == heard:
            assert time.monotonic() < deadline, "no agent audio came"
            await asyncio.sleep(0.01)
        while time.monotonic() < deadline:
            last = self.media[-1][0] if self.media else 0.0
            if time.monotonic() - last >= seconds:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"agent audio still coming after {timeout_s} s")


@dataclass
class Call:
    ing: Lone
    call_id: str
    line: Line
    session: CallSession
    tts: Publisher

    async def audio(self, turn: int, seq: int, samples: np.ndarray | None = None,
                    kind: AudioOutKind = AudioOutKind.AUDIO) -> None:
        """One audio.out record to the call's reply partition, as TTS produces it."""
        pcm = b"" if samples is None else array_to_pcm16(samples)
        record = AudioOut(self.call_id, turn, seq, kind, now_us(), BUS_RATE, pcm)
        await (await self.tts.send(record, Correlation(call_id=self.call_id), partition=self.session.reply_partition))

    async def reply(self, turn: int, chunks: int, amplitude: float, end: bool = True, first_seq: int = 0) -> None:
        """A reply of ``chunks`` 200 ms chunks (then its END, numbered as TTS numbers it: 10 000 × sentences)."""
        for i in range(chunks):
            await self.audio(turn, first_seq + i, tone(0.2, amplitude))
        if end:
            await self.audio(turn, 10_000, kind=AudioOutKind.END)

    async def events(self, kind: CallEventKind) -> list[CallEvent]:
        return [r for r in await all_records(self.ing.settings, CALLS, self.call_id)
                if isinstance(r, CallEvent) and r.kind is kind]

    async def frames(self) -> list[AudioFrame]:
        return sorted((r for r in await all_records(self.ing.settings, AUDIO_IN, self.call_id)
                       if isinstance(r, AudioFrame)), key=lambda r: r.seq)


@contextlib.asynccontextmanager
async def call_on(ing: Lone) -> AsyncIterator[Call]:
    producer = make_producer(ing.settings)
    await producer.start()
    ws, call_id = await twilio_call(ing)
    line = Line(ws)
    line.start()
    try:
        for _ in range(100):
            if call_id in ing.runtime.egress.sessions:
                break
            await asyncio.sleep(0.05)
        yield Call(ing, call_id, line, ing.runtime.egress.sessions[call_id], Publisher(ing.settings, producer, "tts"))
    finally:
        await line.stop()
        with contextlib.suppress(Exception):
            await ws.close()
        await producer.stop()


@contextlib.asynccontextmanager
async def ingress(broker: EmbeddedBroker, tmp_path: Path, **overrides: Any) -> AsyncIterator[Lone]:
    settings = {"playback_end_grace_ms": GRACE_MS, "filler_after_ms": 600, **overrides}
    async with lone_ingress(broker, tmp_path, **settings) as ing:
        yield ing


async def test_a_reply_whose_end_never_comes_is_finished_once_its_audio_has_drained(broker, tmp_path) -> None:
    async with ingress(broker, tmp_path) as ing, call_on(ing) as call:
        drained = metric("switchboard_playback_drained_total")
        await call.reply(turn=7, chunks=3, amplitude=8000, end=False)  # TTS died before the END
        await call.line.quiet(GRACE_MS / 1000 + 0.7, expect_audio=True)
        first, last = call.line.media[0][0], call.line.media[-1][0]
        assert len(call.line.media) == 30, "the whole reply (3 × 200 ms) is heard"
        [finished] = await call.events(CallEventKind.PLAYBACK_FINISHED)
        assert finished.turn_seq == 7 and finished.reason.startswith("drained")
        assert metric("switchboard_playback_drained_total") == drained + 1
        frames = await call.frames()
        assert [f for f in frames if f.agent_turn_seq == 7], "frames carried the reply while it played"
        assert frames[-1].agent_turn_seq is None and frames[-10].agent_turn_seq is None, \
            "after the drain the caller's frames carry no agent_turn_seq: their next words are no barge-in"
        print(f"\nreply heard {last - first:.2f} s; finished without END {GRACE_MS} ms grace after it")

        # the END comes after all (TTS restarted and replayed it): a mark, and nothing else changes
        await call.audio(7, 10_000, kind=AudioOutKind.END)
        await asyncio.sleep(0.5)
        assert [name for _, name in call.line.marks] == ["reply-7"]
        assert len(await call.events(CallEventKind.PLAYBACK_FINISHED)) == 1, "finished once"
        assert not call.line.clears and len(call.line.media) == 30


async def test_replayed_audio_and_ends_of_a_reply_are_played_once(broker, tmp_path) -> None:
    async with ingress(broker, tmp_path) as ing, call_on(ing) as call:
        duplicates = metric("switchboard_agent_audio_dropped_total", reason="duplicate")
        stale = metric("switchboard_agent_audio_dropped_total", reason="stale")
        await call.reply(turn=7, chunks=3, amplitude=8000)
        await call.reply(turn=7, chunks=3, amplitude=8000)  # TTS restarted mid-reply and re-emitted all of it
        await call.line.quiet(1.0, expect_audio=True)
        await call.reply(turn=7, chunks=3, amplitude=8000)  # ... and once more after the reply had finished
        await call.audio(3, 0, tone(0.2, 8000))  # a replay of an older reply (its turn is long answered)
        await asyncio.sleep(1.0)
        assert len(call.line.media) == 30, "3 × 200 ms heard once"
        assert [name for _, name in call.line.marks] == ["reply-7"]
        assert len(await call.events(CallEventKind.PLAYBACK_STARTED)) == 1
        assert len(await call.events(CallEventKind.PLAYBACK_FINISHED)) == 1
        assert metric("switchboard_agent_audio_dropped_total", reason="duplicate") == duplicates + 8
        assert metric("switchboard_agent_audio_dropped_total", reason="stale") == stale + 1
        assert not call.line.clears


async def test_the_rest_of_a_drained_reply_plays_if_the_caller_still_waits_and_is_dropped_once_they_spoke(
        broker, tmp_path) -> None:
    async with ingress(broker, tmp_path) as ing, call_on(ing) as call:
        late = metric("switchboard_agent_audio_dropped_total", reason="late")
        await call.reply(turn=7, chunks=2, amplitude=8000, end=False)  # sentence 0, then TTS died
        await call.line.quiet(GRACE_MS / 1000 + 0.5, expect_audio=True)
        # the restarted TTS replays sentence 0 (same numbers) and makes sentence 1 (seq 10 000 on): the caller, silent,
        # is still waiting for it
        await call.reply(turn=7, chunks=2, amplitude=8000, end=False)
        await call.reply(turn=7, chunks=2, amplitude=8000, end=False, first_seq=10_000)
        await call.line.quiet(GRACE_MS / 1000 + 0.5, expect_audio=True)
        assert len(call.line.media) == 40, "both sentences, each once"
        assert len(await call.events(CallEventKind.PLAYBACK_STARTED)) == 1

        # drained again; this time the caller speaks before sentence 2 comes: it is stale, never played over them
        await call.line.say(tone(0.5, 8000, rate=8000))
        await call.reply(turn=7, chunks=2, amplitude=8000, end=False, first_seq=20_000)
        await call.audio(7, 30_000, kind=AudioOutKind.END)
        await asyncio.sleep(1.0)
        assert len(call.line.media) == 40 and not call.line.clears
        assert metric("switchboard_agent_audio_dropped_total", reason="late") == late + 2
        # (the sentence marks, s7.0 and s7.1, mark each sentence's end: ingress/heard.py)
        ends = [name for _, name in call.line.marks if name.startswith("reply-")]
        assert ends == ["reply-7"], "its END still ends it"
        frames = await call.frames()
        assert frames[-1].agent_turn_seq is None


# -- the TTS side: what a restarted worker re-emits repeats its numbers -----------------------------------------------

async def test_a_restarted_tts_numbers_a_replayed_reply_as_the_first_one_did(tts_engine) -> None:
    from processors.tts.logic import Synthesizer
    from switchboard.records import AgentReply, ReplyKind
    from switchboard.runner import Incoming
    from switchboard.topics import REPLIES

    def sentence(seq: int, text: str) -> Incoming:
        reply = AgentReply("CA1", 7, seq, ReplyKind.SENTENCE, text, 3, "policy", 0)
        return Incoming(reply, Correlation(call_id="CA1"), REPLIES, 0, seq, 0)

    end = Incoming(AgentReply("CA1", 7, 2, ReplyKind.END, "", 3, "policy", 0), Correlation(call_id="CA1"), REPLIES,
                   0, 2, 0)
    texts = ("No problem.", "Which day would suit you?")
    first = Synthesizer(tts_engine)
    numbers = [(o.record.kind, o.record.seq) for m in (sentence(0, texts[0]), sentence(1, texts[1]), end)
               async for o in first.handle(m) if isinstance(o.record, AudioOut)]
    # killed after sentence 0 was committed: the new worker replays sentence 1 and the END only
    again = Synthesizer(tts_engine)
    replayed = [(o.record.kind, o.record.seq) for m in (sentence(1, texts[1]), end)
                async for o in again.handle(m) if isinstance(o.record, AudioOut)]
    assert replayed == [n for n in numbers if n[1] >= 10_000], "the same (turn_seq, seq) as the first time"
    assert numbers[0] == (AudioOutKind.AUDIO, 0) and numbers[-1] == (AudioOutKind.END, 20_000)
    assert [s for _, s in numbers] == sorted(set(s for _, s in numbers)), "increasing within the reply"


async def test_tts_sends_each_call_its_filler_from_the_phrase_cache_at_call_start(tts_engine) -> None:
    from processors.tts.logic import Synthesizer
    from switchboard.runner import Incoming

    started = CallEvent("CA1", "MZ1", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US", "node", 5)
    tts = Synthesizer(tts_engine)
    [out] = [o async for o in tts.handle(Incoming(started, Correlation(call_id="CA1"), CALLS, 0, 0, 0))]
    assert out.partition == 5 and out.record.kind is AudioOutKind.FILLER
    seconds = len(out.record.pcm) / 2 / BUS_RATE
    assert 0.6 < seconds < 1.5 and rms(np.frombuffer(out.record.pcm, dtype="<i2")) > 300, "One moment, please."
    ended = CallEvent("CA2", "MZ2", CallEventKind.CALL_ENDED, 1, "twilio", "clinic", "en-US", "node", 5)
    await tts.on_watched(ended)
    again = CallEvent("CA2", "MZ2", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US", "node", 5)
    assert not [o async for o in tts.handle(Incoming(again, Correlation(call_id="CA2"), CALLS, 0, 0, 0))], \
        "no filler for a call that has ended (a replay of its start)"


@pytest.fixture(scope="module")
def tts_engine():
    """The tts service's offline engine: Piper behind the phrase cache, warmed at start."""
    from processors.tts.main import create_engine
    from processors.tts.settings import TtsSettings

    return create_engine(TtsSettings())
