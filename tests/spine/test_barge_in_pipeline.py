"""Caller voice over the agent's reply, through the whole pipeline (README "Interruptions").

Every service is its own process with its real engine (Silero, Smart Turn, Moonshine, the clinic policy, Piper) on
the real broker; the caller is on the Twilio protocol and speaks Piper's voice. The caller asks for the opening hours
(a two-sentence reply of several seconds) and, 1.5 s into it:

- says "uh-huh", or coughs: the reply is paused, resumed and heard to its end, and that little turn is not answered;
- says "wait, I need to book Saturday instead": the reply is cleared, the ingress reports what was heard of it, and
  the next answer is to those words.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from switchboard.caller import TwilioCaller, Utterance
from switchboard.records import AgentReply, CallEvent, CallEventKind, ReplyKind, TurnEvent, TurnEventKind
from switchboard.settings import ServiceSettings
from switchboard.stack import Stack
from switchboard.topics import CALLS, REPLIES, TURNS
from switchboard.watch import CallRecords
from tests.pipeline import metric, running_stack
from tests.spine.pauses import cough, spoken

pytestmark = pytest.mark.slow
SPINE = ("ingress", "turns", "stt", "agent", "tts")
INTO_REPLY_S = 1.5
HEARD_KEYS = {"sentences_heard", "cut_sentence", "cut_fraction", "heard_ms"}


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory) -> Iterator[Stack]:
    # no filler: the caller speaks 1.5 s into the reply, which it tells from the first agent audio after its question
    with running_stack(broker, tmp_path_factory.mktemp("stack"), only=SPINE, SWITCHBOARD_FILLER_AFTER_MS="0") as s:
        yield s


@pytest.fixture(scope="module")
def piper():
    from processors.tts.piper import PiperEngine

    return PiperEngine()


class Watcher(CallRecords):
    """The call's turn events, agent replies and call events, read from the bus as they are produced."""

    def __init__(self, settings: ServiceSettings, call_id: str) -> None:
        super().__init__(settings, call_id, (TURNS, REPLIES, CALLS))

    def events(self, kind: CallEventKind) -> list[CallEvent]:
        return [r for r in self.records if isinstance(r, CallEvent) and r.kind is kind]

    def turns(self, kind: TurnEventKind) -> list[TurnEvent]:
        return [r for r in self.records if isinstance(r, TurnEvent) and r.kind is kind and r.turn_seq > 0]

    def answered(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for r in self.records:
            if isinstance(r, AgentReply) and r.kind is ReplyKind.SENTENCE and r.turn_seq > 0:
                out.setdefault(r.turn_seq, []).append(r.text)
        return out


async def over_the_hours(stack: Stack, piper, interjection: np.ndarray) -> tuple[TwilioCaller, Watcher, int]:
    """Ask for the opening hours, then ``interjection`` 1.5 s into the answer; returns the hours reply's turn."""
    settings = stack.settings.model_copy(update={"kafka_bootstrap": stack.bootstrap})
    caller = TwilioCaller(f"ws://127.0.0.1:{stack.ingress_port}/twilio/media", settings,
                          credentials=stack.client_credentials)
    question = spoken(piper, "What are your opening hours?")
    async with Watcher(settings, caller.call_id) as watcher:
        await caller.run([Utterance(question, "hours"), Utterance(interjection, "over", over_reply_s=INTO_REPLY_S)],
                         timeout_s=30)
    hours = min(seq for seq, texts in watcher.answered().items() if any("open" in t for t in texts))
    return caller, watcher, hours


@pytest.mark.parametrize("sound", ["uh-huh", "cough"])
async def test_a_backchannel_or_a_cough_during_a_reply_is_no_interruption(stack, piper, sound):
    turns_url = next(f"http://127.0.0.1:{w.metrics_port}/metrics" for w in stack.workers if w.service.name == "turns")
    before = sum(metric(turns_url, "switchboard_false_interruptions_total", reason=r)
                 for r in ("backchannel", "no_words", "no_transcript"))
    audio = spoken(piper, "Uh-huh.") if sound == "uh-huh" else cough()
    caller, watcher, hours = await over_the_hours(stack, piper, audio)

    assert not watcher.events(CallEventKind.PLAYBACK_CLEARED), "the reply was never cut"
    assert not watcher.turns(TurnEventKind.BARGE_IN)
    # heard to its end: every sentence's mark came back from the phone (echoed once its audio had played)
    assert f"s{hours}.0" in caller.result.marks and f"reply-{hours}" in caller.result.marks
    events = [(r.kind.value, r.turn_seq, getattr(r, "reason", None) or getattr(r, "end_reason", None))
              for r in watcher.records if isinstance(r, (CallEvent, TurnEvent))]
    assert [e.turn_seq for e in watcher.events(CallEventKind.PLAYBACK_FINISHED) if e.turn_seq == hours] == [hours], (
        events, watcher.answered())
    # nothing answers the sound: the hours are the last answer
    assert max(watcher.answered()) == hours
    paused = [e for e in watcher.events(CallEventKind.PLAYBACK_PAUSED) if e.turn_seq == hours]
    if sound == "uh-huh":  # a word: the voice paused the reply, then its transcript resumed it
        assert len(paused) == 1
        assert [e.reason for e in watcher.events(CallEventKind.PLAYBACK_RESUMED)] == ["resume"]
        [end] = [e for e in watcher.turns(TurnEventKind.END_OF_TURN) if e.turn_seq > hours]
        assert end.end_reason == "backchannel"
    if paused:  # a cough the VAD took for voice: paused, then resumed and counted
        after = sum(metric(turns_url, "switchboard_false_interruptions_total", reason=r)
                    for r in ("backchannel", "no_words", "no_transcript"))
        assert after == before + 1
        assert caller.result.clears == 1  # the pause's clear; the resume sent the rest


async def test_a_real_interruption_clears_the_reply_reports_what_was_heard_and_is_answered(stack, piper):
    words = spoken(piper, "Wait, I need to book Saturday instead.")
    _, watcher, hours = await over_the_hours(stack, piper, words)

    [barge] = watcher.turns(TurnEventKind.BARGE_IN)
    assert barge.cancelled_turn_seq == hours
    [cleared] = watcher.events(CallEventKind.PLAYBACK_CLEARED)
    assert cleared.turn_seq == hours
    heard = cleared.attributes
    assert set(heard) >= HEARD_KEYS
    sentences = len(watcher.answered()[hours])
    assert int(heard["sentences_heard"]) < sentences
    # cut 1.5 s in plus the reaction: some of the first sentence, not all of it
    assert heard["cut_sentence"] == "0" and 0.0 < float(heard["cut_fraction"]) < 1.0
    assert 1200 <= int(heard["heard_ms"]) <= 3000
    # the next answer is to the interruption
    answers = {seq: texts for seq, texts in watcher.answered().items() if seq > hours}
    assert list(answers) == [barge.turn_seq]
    assert any("saturday" in t.lower() for t in answers[barge.turn_seq]), answers
