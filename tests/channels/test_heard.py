"""Pause, resume and clear of a reply at the ingress, and what the caller heard (ingress/heard.py, ingress/calls.py;
README "Interruptions"), with a phone that plays what it is sent in real time and drops what it holds on a clear."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from ingress.callparts import CallInfo
from ingress.calls import CallSession
from ingress.heard import HoldPolicy, ReplyAudio
from switchboard.audio import BUS_RATE, array_to_pcm16
from switchboard.records import AudioOut, AudioOutKind, CallEvent, CallEventKind, PlaybackCommand, PlaybackKind, now_us

FRAME = 320  # 20 ms at 16 kHz
STRIDE = 10_000  # TTS numbers chunk i of sentence s as s × 10 000 + i
REPLY = 5


@dataclass
class Phone:
    """A CallerSocket that plays frames in real time from their arrival, and on a clear drops what it had not played:
    ``heard()`` is the audio that reached the caller's ear."""

    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (play start, samples)
    marks: list[str] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    _free_at: float = 0.0

    async def send_audio(self, frame: np.ndarray) -> None:
        start = max(time.monotonic(), self._free_at)
        self._free_at = start + 0.02
        self.frames.append((start, frame.copy()))

    async def send_mark(self, name: str) -> None:
        self.marks.append(name)

    async def send_clear(self) -> None:
        now = time.monotonic()
        self.clears.append(now)
        self.frames = [(t, f) for t, f in self.frames if t < now]
        self._free_at = now

    async def close(self, code: int, reason: str) -> None:
        pass

    def heard(self) -> np.ndarray:
        return np.concatenate([f for _, f in self.frames]) if self.frames else np.zeros(0, np.int16)


class Publisher:
    def __init__(self) -> None:
        self.records: list = []

    async def send(self, record, corr, partition=None):
        self.records.append(record)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def events(self, kind: CallEventKind) -> list[CallEvent]:
        return [r for r in self.records if isinstance(r, CallEvent) and r.kind is kind]


def sentence_audio(s: int, ms: int) -> np.ndarray:
    """A sentence's audio whose every sample says which sentence and where: the heard audio can be checked exactly."""
    return (1000 * (s + 1) + np.arange(ms * 16) % 997).astype(np.int16)


@pytest.fixture
async def call():
    phone, pub = Phone(), Publisher()
    session = CallSession(CallInfo("CA1", "MZ1", "twilio", "agent", "en-US"), phone, pub, 0, "node", lead_ms=100)
    session.hold_policy = HoldPolicy(grace_s=1.0, end_guard_s=0.5)
    await session.start()
    yield session, phone, pub
    await session.end("hangup")


def queue_reply(session: CallSession, sentences: list[int], end: bool = True) -> np.ndarray:
    """The reply as TTS sends it: 200 ms chunks numbered sentence × 10 000 + i, then its END."""
    whole = []
    for s, ms in enumerate(sentences):
        audio = sentence_audio(s, ms)
        whole.append(audio)
        for i in range(0, len(audio), 3200):
            pcm = array_to_pcm16(audio[i : i + 3200])
            session.agent_audio(AudioOut("CA1", REPLY, s * STRIDE + i // 3200, AudioOutKind.AUDIO, now_us(), BUS_RATE,
                                         pcm))
    if end:
        session.agent_audio(AudioOut("CA1", REPLY, len(sentences) * STRIDE, AudioOutKind.END, now_us(), BUS_RATE, b""))
    return np.concatenate(whole)


def command(kind: PlaybackKind, onset_us: int | None = None) -> PlaybackCommand:
    return PlaybackCommand("CA1", kind, REPLY, now_us(), onset_us or now_us())


async def until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_heard_counts_whole_sentences_and_the_fraction_of_the_cut_one():
    reply = ReplyAudio(REPLY, keep_frames=40)
    for s, ms in enumerate((400, 600, 400)):
        reply.receive(s * STRIDE, ms * 16)
    reply.ended = True
    for _ in range(20 + 15):  # 400 ms of sentence 0, 300 ms of sentence 1
        seq = 0 if reply.written.get(0, 0) < 400 * 16 else STRIDE
        reply.wrote(seq, np.zeros(FRAME, np.int16))
    assert reply.heard(BUS_RATE) == {"sentences_heard": "1", "cut_sentence": "1", "cut_fraction": "0.50",
                                     "heard_ms": "700"}
    reply.take_back(15)  # the phone had not played the last 300 ms: cut right at the sentence boundary
    assert reply.heard(BUS_RATE) == {"sentences_heard": "1", "cut_sentence": "", "cut_fraction": "0.00",
                                     "heard_ms": "400"}


def test_a_sentence_still_arriving_is_not_whole_until_the_next_begins_or_the_end():
    reply = ReplyAudio(REPLY, keep_frames=10)
    reply.receive(0, 10 * FRAME)
    for _ in range(10):
        reply.wrote(0, np.zeros(FRAME, np.int16))
    assert reply.heard(BUS_RATE)["sentences_heard"] == "0" and reply.heard(BUS_RATE)["cut_sentence"] == "0"
    reply.ended = True
    assert reply.heard(BUS_RATE)["sentences_heard"] == "1" and reply.heard(BUS_RATE)["cut_sentence"] == ""


async def test_a_paused_then_resumed_reply_reaches_the_caller_whole_exactly_once(call):
    session, phone, pub = call
    reply = queue_reply(session, [400, 400, 400])
    await until(lambda: len(phone.frames) >= 30)  # 600 ms written (some of it still on the phone)
    await session.playback(command(PlaybackKind.PAUSE))
    assert len(phone.clears) == 1
    paused = pub.events(CallEventKind.PLAYBACK_PAUSED)
    assert len(paused) == 1 and paused[0].turn_seq == REPLY and "reaction_ms" in paused[0].attributes
    frames_held = len(phone.frames)
    await asyncio.sleep(0.4)
    assert len(phone.frames) == frames_held, "nothing is written while the reply is held"
    assert not pub.events(CallEventKind.PLAYBACK_FINISHED), "a held reply is neither finished nor drained"
    await session.playback(command(PlaybackKind.RESUME))
    await until(lambda: pub.events(CallEventKind.PLAYBACK_FINISHED))
    heard = phone.heard()
    assert np.array_equal(heard[: len(reply)], reply), "the caller heard every sample of the reply once, in order"
    assert [e.reason for e in pub.events(CallEventKind.PLAYBACK_RESUMED)] == ["resume"]
    assert phone.marks == [f"s{REPLY}.0", f"s{REPLY}.1", f"reply-{REPLY}"]


async def test_a_pause_then_a_clear_reports_what_was_heard(call):
    session, phone, pub = call
    queue_reply(session, [400, 400, 400])
    await until(lambda: len(phone.frames) >= 30)
    onset = now_us() - 150_000
    await session.playback(command(PlaybackKind.PAUSE, onset))
    heard_ms = len(phone.heard()) * 1000 // BUS_RATE
    await asyncio.sleep(0.2)
    await session.playback(command(PlaybackKind.CLEAR, onset))
    cleared = pub.events(CallEventKind.PLAYBACK_CLEARED)
    assert len(cleared) == 1 and cleared[0].turn_seq == REPLY
    a = cleared[0].attributes
    assert abs(int(a["heard_ms"]) - heard_ms) <= 20  # within a frame of what reached the ear
    assert a["sentences_heard"] == str(heard_ms // 400)
    assert a["cut_sentence"] == str(heard_ms // 400)
    assert a["cut_fraction"] == f"{(heard_ms % 400) / 400:.2f}"
    assert cleared[0].reason.startswith("barge_in reaction ")  # the reaction of the pause, which cleared the socket
    await asyncio.sleep(0.3)
    assert len(phone.heard()) * 1000 // BUS_RATE == heard_ms, "nothing more of the reply plays"
    assert len(phone.clears) == 1


async def test_a_clear_without_a_pause_also_reports_what_was_heard(call):
    session, phone, pub = call
    queue_reply(session, [300, 300])
    await until(lambda: len(phone.frames) >= 20)
    await session.playback(command(PlaybackKind.CLEAR))
    a = pub.events(CallEventKind.PLAYBACK_CLEARED)[0].attributes
    assert set(a) >= {"sentences_heard", "cut_sentence", "cut_fraction", "heard_ms"}
    assert int(a["heard_ms"]) == len(phone.heard()) * 1000 // BUS_RATE


async def test_a_pause_with_no_resume_plays_on_after_the_grace(call):
    session, phone, pub = call
    reply = queue_reply(session, [400, 400])
    await until(lambda: len(phone.frames) >= 10)
    await session.playback(command(PlaybackKind.PAUSE))
    await until(lambda: pub.events(CallEventKind.PLAYBACK_FINISHED), timeout_s=5)
    assert pub.events(CallEventKind.PLAYBACK_RESUMED)[0].reason.startswith("grace")
    assert np.array_equal(phone.heard()[: len(reply)], reply)


async def test_a_reply_about_to_end_is_not_paused(call):
    session, phone, pub = call
    queue_reply(session, [300])
    await until(lambda: len(phone.frames) >= 5)  # END is in, less than 500 ms left
    await session.playback(command(PlaybackKind.PAUSE))
    assert phone.clears == [] and not pub.events(CallEventKind.PLAYBACK_PAUSED)
    await until(lambda: pub.events(CallEventKind.PLAYBACK_FINISHED))


async def test_a_resume_with_nothing_held_does_nothing(call):
    session, phone, pub = call
    await session.playback(command(PlaybackKind.RESUME))
    await session.playback(command(PlaybackKind.PAUSE))  # nothing playing: nothing to hold
    assert phone.clears == [] and not pub.events(CallEventKind.PLAYBACK_RESUMED)
