"""The JSON API's session registry: unjoined sessions are capped and expire oldest first, without a scan."""

from __future__ import annotations

import pytest

from ingress.jsonapi.sessions import SessionRegistry, SessionState, TooManyPending


def make(registry: SessionRegistry, n: int) -> list:
    return [registry.create("clinic", "en-US", 16000, None) for _ in range(n)]


def test_pending_sessions_are_capped_and_joining_or_expiring_frees_a_place() -> None:
    registry = SessionRegistry(pending_ttl_s=60, max_pending=2)
    first, second = make(registry, 2)
    with pytest.raises(TooManyPending):
        make(registry, 1)
    first.state = SessionState.ACTIVE  # joined: no longer waiting
    (third,) = make(registry, 1)
    assert registry.pending == 2 and registry.get(first.session_id) is first
    second.created_s -= 61  # the oldest waiting one expires
    (fourth,) = make(registry, 1)
    assert registry.get(second.session_id) is None and registry.pending == 2
    assert {third.session_id, fourth.session_id} <= {s for s in registry._pending}


def test_expiry_stops_at_the_first_young_session_and_ended_ones_are_trimmed_oldest_first() -> None:
    registry = SessionRegistry(pending_ttl_s=60, keep_ended=2, max_pending=100)
    sessions = make(registry, 5)
    sessions[0].created_s -= 61
    sessions[2].created_s -= 61  # behind a young one: it waits for its turn at the front (no scan)
    registry.prune()
    assert registry.get(sessions[0].session_id) is None and registry.pending == 4
    for s in sessions[1:]:
        s.state = SessionState.ACTIVE
        s.state = SessionState.ENDED
    assert registry.pending == 0
    assert [registry.get(s.session_id) is not None for s in sessions[1:]] == [False, False, True, True]
