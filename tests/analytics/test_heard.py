"""ClickHouse holds, per agent reply, the text generated and the text the caller heard: a reply cut off by a barge-in
is shown as heard and flagged interrupted, never with its unplayed remainder (view ``agent_turns``, the transcript
report). The sink runs on a real broker with the embedded ClickHouse."""

from __future__ import annotations

from typing import Any

import pytest
from calls_data import CARD, DAY, load, sink_settings, us
from test_sink import run_until_caught_up

from processors.agent.heard import Played, heard_sentences
from sinks import metrics as sink_metrics
from sinks.report import REPORTS_DIR
from sinks.sink import Sink
from sinks.store import Store
from switchboard import records as r
from switchboard.bus import Correlation, Publisher, make_producer
from switchboard.settings import ServiceSettings
from switchboard.topics import CALLS, REPLIES, TRANSCRIPTS, Topic

ev = r.CallEventKind
T0 = us(DAY, 16, 0)
THREE = ["We have slots on Monday morning.", "Tuesday afternoon is also open for you.", "Which day works for you?"]
POSITIONS = {"sentences_heard": "1", "cut_sentence": "1", "cut_fraction": "0.50", "heard_ms": "2600"}


def _event(call_id: str, kind: r.CallEventKind, ts: int, turn: int | None = None, **attrs: str) -> r.CallEvent:
    return r.CallEvent(call_id, f"s-{call_id}", kind, ts, "twilio", "clinic", "en-US", "node-a", 1, turn_seq=turn,
                       attributes=attrs)


def _reply(call_id: str, turn: int, sentences: list[str], ts: int) -> list[tuple[Topic, Any]]:
    out: list[tuple[Topic, Any]] = [
        (REPLIES, r.AgentReply(call_id, turn, i, r.ReplyKind.SENTENCE, s, 1, "openai", ts + i, intent="book"))
        for i, s in enumerate(sentences)]
    return [*out, (REPLIES, r.AgentReply(call_id, turn, len(sentences), r.ReplyKind.END, "", 1, "openai", ts + 9))]


def cut_call(call_id: str = "h1", clear: dict[str, str] | None = None, started: bool = True) -> list[tuple[Topic, Any]]:
    """A call whose reply to turn 1 is cut in its second sentence, then a reply played to its end."""
    recs: list[tuple[Topic, Any]] = [(CALLS, _event(call_id, ev.CALL_STARTED, T0))]
    recs.append((TRANSCRIPTS, r.Transcript(call_id, 1, r.TranscriptKind.FINAL, "Can I book an appointment?", "en",
                                           900, "moonshine", T0 + 1_000_000)))
    recs += _reply(call_id, 1, THREE, T0 + 2_000_000)
    if started:
        recs.append((CALLS, _event(call_id, ev.PLAYBACK_STARTED, T0 + 2_500_000, 1)))
    recs.append((CALLS, _event(call_id, ev.PLAYBACK_CLEARED, T0 + 5_000_000, 1, reason="barge_in reaction 190 ms",
                               **(POSITIONS if clear is None else clear))))
    recs.append((TRANSCRIPTS, r.Transcript(call_id, 2, r.TranscriptKind.FINAL, f"Monday. My card is {CARD}.", "en",
                                           900, "moonshine", T0 + 7_000_000)))
    recs += _reply(call_id, 2, [f"Noted the card {CARD}.", "Monday it is."], T0 + 8_000_000)
    recs.append((CALLS, _event(call_id, ev.PLAYBACK_STARTED, T0 + 8_500_000, 2)))
    recs.append((CALLS, _event(call_id, ev.PLAYBACK_FINISHED, T0 + 11_000_000, 2)))
    return recs


def turns(store: Store, call_id: str = "h1") -> dict[int, dict[str, Any]]:
    columns, rows = store.query(f"SELECT * FROM agent_turns WHERE call_id = '{call_id}' ORDER BY turn_seq")
    return {row[1]: dict(zip(columns, row, strict=True)) for row in rows}


HEARD = "We have slots on Monday morning. Tuesday afternoon is also—"


def test_a_cut_reply_keeps_what_was_heard_next_to_what_was_generated(store: Store) -> None:
    load(store, cut_call())
    got = turns(store)
    assert got[1] | {"ts": None} == {
        "call_id": "h1", "turn_seq": 1, "ts": None, "engine": "openai", "intent": "book", "sentences": 3,
        "generated": " ".join(THREE), "heard": HEARD, "interrupted": True, "sentences_heard": 1, "heard_ms": 2600}
    assert (got[2]["heard"], got[2]["interrupted"]) == ("Noted the card [CARD]. Monday it is.", False)
    assert got[2]["generated"] == got[2]["heard"], "played to its end: all of it heard"


CUTS = [Played(1, 1, f) for f in (0.0, 0.07, 0.14, 0.35, 0.5, 0.65, 0.86, 0.99, 1.0)] + [
    Played(0, 0, 0.34), Played(2, 2, 0.5), Played(3, None, 0.0), Played(0, 2, 0.5), Played(1, 0, 0.5)]


def test_the_view_cuts_the_same_words_as_the_agent(store: Store) -> None:
    recs = []
    for i, p in enumerate(CUTS):
        cut = "" if p.cut_sentence is None else str(p.cut_sentence)
        clear = {"sentences_heard": str(p.sentences_heard), "cut_sentence": cut,
                 "cut_fraction": f"{p.cut_fraction:.2f}"}
        recs += cut_call(f"f{i}", clear=clear)
    load(store, recs)
    for i, p in enumerate(CUTS):
        assert turns(store, f"f{i}")[1]["heard"] == " ".join(heard_sentences(THREE, p)), p


@pytest.mark.parametrize(("clear", "started", "heard"), [
    ({}, False, ""),  # an older ingress, and the reply never started: nothing of it heard
    ({}, True, " ".join(THREE)),  # an older ingress after it started: all of it, flagged
    ({"sentences_heard": "0", "cut_sentence": "", "cut_fraction": "0.00", "heard_ms": "0"}, True, ""),
    ({"sentences_heard": "2", "cut_sentence": "", "cut_fraction": "0.00", "heard_ms": "5100"}, True,
     " ".join(THREE[:2])),  # cut in the pause before the question
], ids=["never-started", "no-positions", "queued", "between-sentences"])
def test_what_a_clear_says_decides_what_was_heard(store: Store, clear: dict[str, str], started: bool,
                                                  heard: str) -> None:
    load(store, cut_call(clear=clear, started=started))
    assert (turns(store)[1]["heard"], turns(store)[1]["interrupted"]) == (heard, True)


def test_unreadable_positions_are_counted_and_stored_as_unknown(store: Store) -> None:
    before = sink_metrics.BAD_PLAYBACK_POSITIONS._value.get()
    load(store, cut_call(clear={"sentences_heard": "1", "cut_fraction": "7"}))
    assert sink_metrics.BAD_PLAYBACK_POSITIONS._value.get() == before + 1
    got = turns(store)[1]
    assert (got["sentences_heard"], got["heard"]) == (None, " ".join(THREE)), "unknown: kept, flagged"


def test_the_transcript_report_shows_the_cut_reply_as_heard_and_flagged(store: Store) -> None:
    load(store, cut_call())
    _, rows = store.query((REPORTS_DIR / "recent_transcripts.sql").read_text())
    assert rows == [
        ("h1", 1, "caller", "Can I book an appointment?"),
        ("h1", 1, "agent", HEARD + " [interrupted]"),
        ("h1", 2, "caller", "Monday. My card is [CARD]."),
        ("h1", 2, "agent", "Noted the card [CARD]. Monday it is."),
    ]


@pytest.mark.timeout(120)
async def test_the_records_of_a_cut_reply_reach_clickhouse_through_the_sink_as_heard(
    bus_settings: ServiceSettings, store: Store
) -> None:
    producer = make_producer(bus_settings)
    await producer.start()
    try:
        pub = Publisher(bus_settings, producer, "test")
        for topic, rec in cut_call():
            await (await pub.send(rec, Correlation(call_id=rec.call_id), topic=topic))
    finally:
        await producer.stop()
    await run_until_caught_up(Sink(sink_settings(bus_settings, store), store))
    got = turns(store)
    assert (got[1]["heard"], got[1]["interrupted"], got[1]["generated"]) == (HEARD, True, " ".join(THREE))
    assert "4111" not in str(got), "the heard text is the redacted text"
    _, rows = store.query((REPORTS_DIR / "recent_transcripts.sql").read_text())
    assert ("h1", 1, "agent", HEARD + " [interrupted]") in rows
    assert not any("Which day works for you?" in row[3] for row in rows), "never the unplayed remainder"
