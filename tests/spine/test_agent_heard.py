"""The agent keeps what the caller heard of a reply cut off by a barge-in, never the unplayed remainder.

Records only (the offline policy engine, a changelog in memory): the ingress's PLAYBACK_CLEARED says how far the
reply played (sentences_heard, cut_sentence, cut_fraction, heard_ms), the agent trims the reply in its dialog state
to that, flags it, publishes the state, and its policy does not take an unheard question as asked."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.agent import heard
from processors.agent.heard import FLAG, HEARD_SLOT, RECENT_SLOT, BadPlayback, Played
from processors.agent.logic import AgentProcessor
from processors.agent.policy import ClinicPolicy
from processors.agent.state import MemoryStore
from switchboard import metrics
from switchboard.bus import Correlation
from switchboard.records import (
    AgentReply,
    CallEvent,
    CallEventKind,
    DialogState,
    ReplyKind,
    Timings,
    Transcript,
    TranscriptKind,
)
from switchboard.runner import Incoming
from switchboard.topics import CALLS, TRANSCRIPTS

CORR = Correlation(call_id="CA1")
SORRY = [
    "Sorry, I didn't quite get that.",
    "I can book, reschedule or cancel an appointment, or tell you our opening hours.",
    "What would you like to do?",
]


async def _outs(agent: AgentProcessor, record: object, topic=CALLS) -> list:
    return [o.record async for o in agent.handle(Incoming(record, CORR, topic, 0, 0, 0))]


def _event(kind: CallEventKind, turn: int | None = None, **attributes: str) -> CallEvent:
    return CallEvent("CA1", "MZ1", kind, 1, "twilio", "clinic", "en-US", "node", 5, turn_seq=turn,
                     attributes=attributes)


def _cleared(turn: int, sentences_heard: int | None = None, cut_sentence: int | None = None,
             cut_fraction: float = 0.0) -> CallEvent:
    if sentences_heard is None:  # an older ingress: no positions
        return _event(CallEventKind.PLAYBACK_CLEARED, turn)
    return _event(CallEventKind.PLAYBACK_CLEARED, turn, sentences_heard=str(sentences_heard),
                  cut_sentence="" if cut_sentence is None else str(cut_sentence),
                  cut_fraction=f"{cut_fraction:.2f}", heard_ms="2300")


def _final(turn: int, text: str) -> Transcript:
    return Transcript("CA1", turn, TranscriptKind.FINAL, text, "en-US", 900, "whisper", 2,
                      timings=Timings(speech_end_us=1, turn_detected_us=2))


def _said(outs: list) -> list[str]:
    return [r.text for r in outs if isinstance(r, AgentReply) and r.kind is ReplyKind.SENTENCE]


def _state(outs: list) -> DialogState:
    return [r for r in outs if isinstance(r, DialogState)][-1]


def _heard(state: DialogState) -> dict:
    return json.loads(state.slots[HEARD_SLOT])


async def _agent() -> AgentProcessor:
    agent = AgentProcessor(ClinicPolicy(), MemoryStore())
    await _outs(agent, _event(CallEventKind.CALL_STARTED))
    return agent


def _sentences(outcome: str) -> float:
    return metrics.REPLY_SENTENCES.labels(outcome)._value.get()


def test_a_cut_sentence_keeps_its_share_of_words_then_a_dash():
    assert heard.cut_words("one two three four", 0.5) == "one two—"
    assert heard.cut_words("one two three four", 0.1) == "", "no word played: nothing of the sentence"
    assert heard.cut_words("one two three", 0.5) == "one two—", "half up, as the analytics view rounds"
    assert heard.heard_sentences(["A b.", "C d e f.", "G."], Played(1, 1, 0.5)) == ["A b.", "C d—"]
    assert heard.heard_sentences(["A b.", "C d e f."], Played(1, None, 0.0)) == ["A b."]


@given(st.lists(st.text("ab c", min_size=1), min_size=1, max_size=5), st.integers(0, 6), st.integers(0, 6),
       st.floats(0.0, 1.0))
def test_what_was_heard_is_always_a_prefix_of_what_was_said(sentences, heard_n, cut, fraction):
    kept = heard.heard_sentences(sentences, Played(heard_n, cut, fraction))
    said_words = " ".join(sentences).split()
    heard_words = " ".join(kept).replace("—", "").split()
    assert heard_words == said_words[: len(heard_words)]
    assert len(kept) <= min(len(sentences), heard_n + 1)


@pytest.mark.parametrize("attributes", [{"sentences_heard": "two"}, {"sentences_heard": "1", "cut_fraction": "1.5"},
                                        {"sentences_heard": "-1"}, {"sentences_heard": "1", "cut_sentence": "x"}])
def test_unreadable_positions_are_a_clear_error(attributes):
    with pytest.raises(BadPlayback):
        heard.played(attributes)


async def test_a_reply_cut_in_its_second_sentence_keeps_the_first_and_half_the_second_flagged():
    agent = await _agent()
    assert _said(await _outs(agent, _final(1, "Hmm, blue elephants."), TRANSCRIPTS)) == SORRY
    before = {o: _sentences(o) for o in ("heard", "cut", "unplayed")}
    outs = await _outs(agent, _cleared(1, sentences_heard=1, cut_sentence=1, cut_fraction=0.5))
    state = _state(outs)  # the trimmed state is published on the changelog
    assert _heard(state) == {"turn": 1, "interrupted": True, "sentences_heard": 1,
                             "heard": "Sorry, I didn't quite get that. I can book, reschedule or cancel an—"}
    assert [r["turn"] for r in json.loads(state.slots[RECENT_SLOT])] == [0], "a settled reply is forgotten"
    assert {o: _sentences(o) - before[o] for o in before} == {"heard": 1, "cut": 1, "unplayed": 1}
    assert await _outs(agent, _cleared(1, sentences_heard=1, cut_sentence=1, cut_fraction=0.5)) == [], "a replay"


async def test_a_queued_reply_that_never_started_left_nothing_heard():
    agent = await _agent()
    await _outs(agent, _final(1, "Hmm, blue elephants."), TRANSCRIPTS)
    before = _sentences("unplayed")
    state = _state(await _outs(agent, _cleared(1)))  # no positions, no PLAYBACK_STARTED
    assert _heard(state)["heard"] == "" and _sentences("unplayed") - before == 3


async def test_a_started_reply_cleared_without_positions_is_kept_whole_but_flagged():
    agent = await _agent()
    await _outs(agent, _final(1, "Hmm, blue elephants."), TRANSCRIPTS)
    assert await _outs(agent, _event(CallEventKind.PLAYBACK_STARTED, 1)) == [], "noted, not published"
    state = _state(await _outs(agent, _cleared(1)))
    assert _heard(state) == {"turn": 1, "heard": " ".join(SORRY), "interrupted": True, "sentences_heard": None}


async def test_a_reply_that_played_to_its_end_changes_nothing():
    agent = await _agent()
    await _outs(agent, _final(1, "Hmm, blue elephants."), TRANSCRIPTS)
    assert await _outs(agent, _event(CallEventKind.PLAYBACK_FINISHED, 1)) == []
    assert await _outs(agent, _cleared(1, sentences_heard=0)) == [], "finished: nothing left to trim"
    assert HEARD_SLOT not in agent.states["CA1"].slots


async def test_an_unheard_confirmation_is_asked_again_and_a_yes_before_it_books_nothing():
    agent = await _agent()
    await _outs(agent, _final(1, "I'd like to book an appointment on Tuesday at 3 PM."), TRANSCRIPTS)
    assert agent.states["CA1"].stage == "confirm"
    # "Just to confirm, I'll book you in for Tuesday at 3 PM." played; "Is that right?" never did
    await _outs(agent, _cleared(1, sentences_heard=1, cut_sentence=None))
    outs = await _outs(agent, _final(2, "Yes, and one more thing."), TRANSCRIPTS)
    assert _said(outs) == ["Just to confirm, I'll book you in for Tuesday at 3 PM.", "Is that right?"]
    assert "done" not in _state(outs).slots, "nothing booked on a yes to a question never heard"
    outs = await _outs(agent, _final(3, "Yes, that's right."), TRANSCRIPTS)
    assert _said(outs)[0] == "You're booked for Tuesday at 3 PM."


async def test_a_heard_confirmation_takes_the_yes_as_before():
    agent = await _agent()
    await _outs(agent, _final(1, "I'd like to book an appointment on Tuesday at 3 PM."), TRANSCRIPTS)
    await _outs(agent, _cleared(1, sentences_heard=2))  # both sentences played, cut in the silence after them
    outs = await _outs(agent, _final(2, "Yes."), TRANSCRIPTS)
    assert _said(outs)[0] == "You're booked for Tuesday at 3 PM."


async def test_an_unheard_confirmation_takes_a_new_time_from_the_interruption():
    agent = await _agent()
    await _outs(agent, _final(1, "I'd like to book an appointment on Tuesday at 3 PM."), TRANSCRIPTS)
    await _outs(agent, _cleared(1, sentences_heard=0, cut_sentence=0, cut_fraction=0.4))
    outs = await _outs(agent, _final(2, "Actually make it 4 PM."), TRANSCRIPTS)
    assert _said(outs) == ["Just to confirm, I'll book you in for Tuesday at 4 PM.", "Is that right?"]


async def test_a_clear_after_the_next_transcript_still_trims_the_earlier_reply():
    agent = await _agent()
    await _outs(agent, _final(1, "Hmm, blue elephants."), TRANSCRIPTS)
    await _outs(agent, _final(2, "I'd like to book an appointment."), TRANSCRIPTS)  # before reply 1's clear
    assert agent.states["CA1"].stage == "ask_day"
    state = _state(await _outs(agent, _cleared(1, sentences_heard=1, cut_sentence=1, cut_fraction=0.5)))
    assert _heard(state)["turn"] == 1 and _heard(state)["heard"].endswith("reschedule or cancel an—")
    assert state.stage == "ask_day" and "policy.unasked" not in state.slots, "the later reply's stage is left alone"
    assert [r["turn"] for r in json.loads(state.slots[RECENT_SLOT])] == [2], "reply 2 is still remembered"


async def test_a_rebalance_keeps_the_unsettled_reply_and_the_trimmed_state():
    store = MemoryStore()
    agent = AgentProcessor(ClinicPolicy(), store)
    await _outs(agent, _event(CallEventKind.CALL_STARTED))
    store.saved["CA1"] = _state(await _outs(agent, _final(1, "Hmm, blue elephants."), TRANSCRIPTS))
    restarted = AgentProcessor(ClinicPolicy(), store)  # another worker, from the changelog record
    await restarted.on_assigned({0})
    store.saved["CA1"] = _state(await _outs(restarted, _cleared(1, sentences_heard=1, cut_sentence=1,
                                                                cut_fraction=0.5)))
    again = AgentProcessor(ClinicPolicy(), store)
    await again.on_assigned({0})
    assert _heard(again.states["CA1"])["heard"].endswith("reschedule or cancel an—")


async def test_malformed_positions_are_counted_and_treated_as_none_given():
    agent = await _agent()
    await _outs(agent, _final(1, "Hmm, blue elephants."), TRANSCRIPTS)
    before = metrics.PLAYBACK_REPORTS.labels("malformed")._value.get()
    bad = _event(CallEventKind.PLAYBACK_CLEARED, 1, sentences_heard="lots", cut_fraction="0.5")
    state = _state(await _outs(agent, bad))
    assert metrics.PLAYBACK_REPORTS.labels("malformed")._value.get() == before + 1
    assert _heard(state)["heard"] == "", "never started: nothing heard"


def test_the_flag_marks_the_history_text():
    assert FLAG == " [interrupted by the caller]"


async def test_a_speculative_answer_made_before_the_clear_is_discarded_and_the_answer_made_from_what_was_heard():
    agent = AgentProcessor(ClinicPolicy(), MemoryStore(), speculate="offline")
    await _outs(agent, _event(CallEventKind.CALL_STARTED))
    await _outs(agent, _final(1, "I'd like to book an appointment on Tuesday at 3 PM."), TRANSCRIPTS)
    early = Transcript("CA1", 2, TranscriptKind.EARLY, "Yes.", "en-US", 900, "moonshine", 2)
    await _outs(agent, early, TRANSCRIPTS)  # the speculation answers "yes" to the confirmation
    outs = await _outs(agent, _cleared(1, sentences_heard=1))  # ... which the caller never heard
    assert [r.kind for r in outs if isinstance(r, AgentReply)] == [ReplyKind.DISCARD]
    outs = await _outs(agent, _final(2, "Yes."), TRANSCRIPTS)
    assert _said(outs) == ["Just to confirm, I'll book you in for Tuesday at 3 PM.", "Is that right?"]


async def test_a_cut_silence_prompt_leaves_the_dialogs_question_asked():
    agent = await _agent()
    await _outs(agent, _final(1, "I'd like to book an appointment on Tuesday at 3 PM."), TRANSCRIPTS)
    await _outs(agent, _event(CallEventKind.PLAYBACK_FINISHED, 1))  # the confirmation was heard whole
    prompt = _event(CallEventKind.SILENCE, 2, stage="prompt")
    assert _said(await _outs(agent, prompt)) == ["Are you still there?"]
    await _outs(agent, _cleared(2, sentences_heard=0, cut_sentence=0, cut_fraction=0.3))
    outs = await _outs(agent, _final(3, "Yes."), TRANSCRIPTS)
    assert _said(outs)[0] == "You're booked for Tuesday at 3 PM."
