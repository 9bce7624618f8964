"""Post-call enrichment: summary, sentiment per caller turn and per call, intent, goal or handoff."""

from __future__ import annotations

from typing import Any

import pytest

from processors.enrich.analysis import sentiment
from processors.enrich.logic import Enricher
from processors.enrich.settings import EnrichSettings
from switchboard import records as r
from switchboard.bus import Correlation
from switchboard.runner import Incoming
from switchboard.topics import AGENT_STATE, CALLS, REPLIES, TRANSCRIPTS, topic_for


def incoming(record: Any) -> Incoming:
    topic = AGENT_STATE if isinstance(record, r.DialogState) else topic_for(type(record))
    return Incoming(record, Correlation(call_id=record.call_id), topic, 0, 0, 0)


async def feed(enricher: Enricher, records: list[Any]) -> list[r.CallSummary]:
    out = []
    for rec in records:
        out += [o.record async for o in enricher.handle(incoming(rec))]
    return out


def event(call_id: str, kind: r.CallEventKind, ts: int, reason: str | None = None) -> r.CallEvent:
    return r.CallEvent(call_id, "s", kind, ts, "twilio", "clinic", "en-US", "n", 0, reason=reason)


def caller(call_id: str, seq: int, text: str) -> r.Transcript:
    return r.Transcript(call_id, seq, r.TranscriptKind.FINAL, text, "en", 1000, "whisper", r.now_us())


def agent(call_id: str, seq: int, text: str, intent: str | None) -> r.AgentReply:
    return r.AgentReply(call_id, seq, 0, r.ReplyKind.SENTENCE, text, 0, "policy", r.now_us(), intent=intent)


def state(call_id: str, intent: str, outcome: str, ended: bool) -> r.DialogState:
    return r.DialogState(call_id, "ended" if ended else "await_intent", 2, 2, 0, "en", ended, r.now_us(),
                         intent=intent, slots={"outcome": outcome})


BOOKING = [
    event("c1", r.CallEventKind.CALL_STARTED, 1_000_000),
    agent("c1", 0, "Thank you for calling Riverside Clinic.", None),
    caller("c1", 1, "Hi, I'd like to book an appointment for Tuesday at 3 PM please."),
    agent("c1", 1, "Just to confirm, I'll book you in for Tuesday at 3 PM.", "book"),
    caller("c1", 2, "Yes, that's perfect, thank you so much!"),
    agent("c1", 2, "You're booked for Tuesday at 3 PM.", "book"),
    state("c1", "book", "resolved", False),
    event("c1", r.CallEventKind.CALL_ENDED, 95_000_000, "hangup"),
]


async def test_a_completed_booking_is_summarised_as_resolved_with_positive_sentiment() -> None:
    out = await feed(Enricher(EnrichSettings()), BOOKING)
    assert len(out) == 1
    s = out[0]
    assert (s.call_id, s.intent, s.outcome, s.goal_reached, s.handed_off) == ("c1", "book", "resolved", True, False)
    assert set(s.turn_sentiment) == {"1", "2"}
    assert s.turn_sentiment["2"] > 0.5 and s.sentiment > 0.3
    assert "book" in s.summary and "resolved" in s.summary and "94 s" in s.summary
    assert "You're booked" in s.summary
    assert s.caller_turns == 2 and s.model.startswith("vader-")


async def test_an_angry_caller_asking_for_a_human_is_a_negative_handoff() -> None:
    out = await feed(Enricher(EnrichSettings()), [
        event("c2", r.CallEventKind.CALL_STARTED, 0),
        caller("c2", 1, "This is useless and terrible, I hate these machines. Get me a real person now!"),
        agent("c2", 1, "Let me put you through to one of our staff.", "human"),
        event("c2", r.CallEventKind.CALL_ENDED, 30_000_000, "hangup"),
    ])
    s = out[-1]
    assert (s.intent, s.outcome, s.handed_off, s.goal_reached) == ("human", "handoff", True, False)
    assert s.sentiment < -0.3 and s.turn_sentiment["1"] < -0.3


async def test_records_arriving_after_call_ended_revise_the_summary() -> None:
    enricher = Enricher(EnrichSettings())
    first = await feed(enricher, [
        event("c3", r.CallEventKind.CALL_STARTED, 0),
        caller("c3", 1, "I need to cancel my appointment on Friday."),
        event("c3", r.CallEventKind.CALL_ENDED, 10_000_000, "hangup"),
    ])
    assert first[-1].outcome == "unresolved" and first[-1].intent == "cancel"
    late = await feed(enricher, [state("c3", "cancel", "resolved", True)])
    assert late[-1].outcome == "resolved" and late[-1].goal_reached


async def test_nothing_is_published_before_the_call_ends_and_ended_calls_are_forgotten() -> None:
    enricher = Enricher(EnrichSettings(late_window_s=0))
    assert await feed(enricher, BOOKING[:-1]) == []
    assert await feed(enricher, BOOKING[-1:])
    await feed(enricher, [event("other", r.CallEventKind.CALL_STARTED, 0)])
    assert "c1" not in enricher.calls


async def test_a_call_without_caller_speech_is_abandoned_without_an_intent() -> None:
    out = await feed(Enricher(EnrichSettings()), [
        event("c4", r.CallEventKind.CALL_STARTED, 0), event("c4", r.CallEventKind.CALL_ENDED, 5_000_000, "hangup"),
    ])
    assert (out[0].outcome, out[0].intent, out[0].caller_turns, out[0].sentiment) == ("abandoned", None, 0, 0.0)


@pytest.mark.parametrize(("text", "sign"), [("Thank you, that's wonderful!", 1), ("This is awful.", -1)])
def test_sentiment_is_vader_compound(text: str, sign: int) -> None:
    assert sentiment(text) * sign > 0.3


def test_enrich_consumes_the_call_topics_and_the_agent_state() -> None:
    assert set(Enricher.inputs) == {CALLS, TRANSCRIPTS, REPLIES, AGENT_STATE}


async def test_commit_floor_holds_offsets_back_to_the_first_record_of_each_open_call() -> None:
    enricher = Enricher(EnrichSettings(late_window_s=0))

    async def at(record: Any, offset: int) -> list[Any]:
        msg = incoming(record)
        msg.partition, msg.offset = 3, offset
        return [o async for o in enricher.handle(msg)]

    await at(event("a", r.CallEventKind.CALL_STARTED, 0), 10)
    await at(event("b", r.CallEventKind.CALL_STARTED, 0), 11)
    await at(caller("b", 1, "hello"), 40)
    assert enricher.commit_floor(CALLS, 3) == 10 and enricher.commit_floor(TRANSCRIPTS, 3) == 40
    assert enricher.commit_floor(CALLS, 2) is None
    await at(event("a", r.CallEventKind.CALL_ENDED, 1), 12)
    await at(event("b", r.CallEventKind.CALL_ENDED, 1), 13)
    await at(event("c", r.CallEventKind.CALL_STARTED, 0), 14)  # sweeps the ended calls
    assert enricher.commit_floor(CALLS, 3) == 14 and enricher.commit_floor(TRANSCRIPTS, 3) is None
