"""How each turn ended reaches ClickHouse: its reason, the early-transcript and verdict times; early text does not."""

from __future__ import annotations

from dataclasses import replace

from calls_data import load

from sinks.report import REPORTS_DIR
from sinks.store import Store
from switchboard import records as r
from switchboard.latency import turn_latency
from switchboard.topics import LATENCY, TRANSCRIPTS, TURNS

T = 1_800_000_000_000_000  # epoch µs


def test_a_turn_ended_by_its_early_transcript_lands_with_its_reason_and_decision_times(store: Store) -> None:
    timings = r.Timings(
        speech_start_us=T, speech_end_us=T + 1_500_000, pause_detected_us=T + 1_700_000,
        early_transcript_us=T + 1_820_000, end_decision_us=T + 1_860_000, turn_detected_us=T + 1_860_000,
        stt_started_us=T + 1_880_000, stt_finished_us=T + 1_880_001, end_reason="complete",
        egress_first_audio_us=T + 2_100_000,
    )
    load(store, [
        (TURNS, r.TurnEvent("c1", 3, r.TurnEventKind.END_OF_TURN, T + 1_860_000, T, T + 1_500_000,
                            end_reason="complete")),
        (TRANSCRIPTS, r.Transcript("c1", 3, r.TranscriptKind.EARLY, "Yes, that's", "en", 1400, "moonshine", T + 1)),
        (TRANSCRIPTS, r.Transcript("c1", 3, r.TranscriptKind.FINAL, "Yes, that's right.", "en", 1700, "moonshine",
                                   T + 2)),
        (LATENCY, turn_latency("c1", 3, timings, T + 2_100_000)),
    ])
    _, [row] = store.query("SELECT end_reason, turn_detection_ms, early_ms, decision_ms, stt_ms FROM turns FINAL")
    assert row == ("complete", 360.0, 120.0, 160.0, 0.001)
    _, texts = store.query("SELECT text FROM transcripts FINAL WHERE speaker = 'caller'")
    assert texts == [("Yes, that's right.",)]  # the early transcript is not the turn's transcript
    _, [(reason,)] = store.query("SELECT reason FROM events FINAL WHERE kind = 'end_of_turn'")
    assert reason == "complete"
    _, stages = store.query((REPORTS_DIR / "latency_percentiles.sql").read_text())
    assert {"early_transcript", "end_decision"} <= {s[0] for s in stages}


def test_a_reply_said_on_the_end_of_turn_shows_stt_as_unneeded_not_missing() -> None:
    from switchboard.latency import turn_steps

    T = 1_700_000_000_000_000
    said_on_end = r.Timings(speech_end_us=T, turn_detected_us=T + 700_000, pause_detected_us=T + 260_000,
                            early_transcript_us=T + 520_000, speculation="used", egress_first_audio_us=T + 760_000)
    steps = turn_steps(turn_latency("c1", 3, said_on_end, T + 800_000))
    assert (steps["stt"], steps["stt_how"], steps["early"], steps["processing"]) == (None, "unneeded", 260.0, 60.0)
    reused = replace(said_on_end, stt_started_us=T + 720_000, stt_finished_us=T + 721_000)
    assert turn_steps(turn_latency("c1", 3, reused, T + 800_000))["stt_how"] == "reused"
