"""A call let go for silence, or handed off from the keypad, lands in ClickHouse like any other call end: its
``calls`` row carries the end reason, its ``events`` the silence stages, and key presses stay masked."""

from __future__ import annotations

from switchboard import records as r
from switchboard.topics import CALLS
from tests.analytics.calls_data import TODAY, _event, load, us

K = r.CallEventKind


def test_silence_and_handoff_end_reasons_and_silence_events_land_and_digits_stay_masked(store):
    t = us(TODAY, 9, 0)
    records = [
        (CALLS, _event("quiet", K.CALL_STARTED, t, "twilio")),
        (CALLS, _event("quiet", K.SILENCE, t + 10_000_000, "twilio", turn_seq=500, reason="caller silent 8.0 s",
                       attributes={"silent_s": "8.0", "stage": "prompt"})),
        (CALLS, _event("quiet", K.SILENCE, t + 32_000_000, "twilio", turn_seq=1600, reason="caller silent 30.0 s",
                       attributes={"silent_s": "30.0", "stage": "hangup"})),
        (CALLS, _event("quiet", K.CALL_ENDED, t + 35_000_000, "twilio", reason="silence")),
        (CALLS, _event("keyed", K.CALL_STARTED, t, "twilio")),
        (CALLS, _event("keyed", K.DTMF, t + 5_000_000, "twilio", turn_seq=200, reason="0")),
        (CALLS, _event("keyed", K.CALL_ENDED, t + 8_000_000, "twilio", reason="handoff")),
    ]
    load(store, records)
    _, rows = store.query("SELECT call_id, end_reason, outcome FROM calls FINAL ORDER BY call_id")
    assert rows == [("keyed", "handoff", "ended"), ("quiet", "silence", "ended")]
    _, rows = store.query("SELECT kind, reason, attributes['stage'] FROM events WHERE call_id = 'quiet' "
                          "AND kind = 'silence' ORDER BY ts")
    assert rows == [("silence", "caller silent 8.0 s", "prompt"), ("silence", "caller silent 30.0 s", "hangup")]
    _, rows = store.query("SELECT reason FROM events WHERE call_id = 'keyed' AND kind = 'dtmf'")
    assert rows == [("#",)]
