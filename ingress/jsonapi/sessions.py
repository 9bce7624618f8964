"""Sessions of the JSON API on this node: issued by ``POST /api/v1/calls/start``, joined by the websocket.

A session lives on the node that issued it (its websocket must reach the same
node, as the returned ``websocket_url`` does). At most ``max_pending`` sessions
wait to be joined; one nobody joins expires after ``pending_ttl_s``. Ended ones
are kept (the newest ``keep_ended``) so their per-turn latencies can still be
read from the metrics endpoint.

Bookkeeping never scans all sessions: pending and ended sessions sit in
insertion-ordered dicts, so expiry pops from the front (oldest first) and stops
at the first one still young. A session's state change moves it between them.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from ingress.calls import CallSession
from switchboard.records import TurnLatency

PENDING_TTL_S = 120.0
KEEP_ENDED = 1000
MAX_PENDING = 1000


class SessionState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    ENDED = "ended"


class TooManyPending(Exception):
    """More sessions wait to be joined than the node allows."""


@dataclass
class ApiSession:
    session_id: str
    call_id: str
    agent_type: str
    language: str
    sample_rate: int
    caller_number: str | None = None
    channel: str = "jsonapi"
    choices: dict[str, str] = field(default_factory=dict)  # per-call engines / voice, into the call's records
    end_reason: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    created_s: float = field(default_factory=time.monotonic)
    call: CallSession | None = None
    _state: SessionState = SessionState.PENDING
    _registry: SessionRegistry | None = field(default=None, repr=False)

    @property
    def state(self) -> SessionState:
        return self._state

    @state.setter
    def state(self, value: SessionState) -> None:
        # the websocket handler sets the state; the registry's ordered indexes follow it
        self._state = value
        if self._registry is not None:
            self._registry.moved(self)

    @property
    def latencies(self) -> list[TurnLatency]:
        return list(self.call.turn_latencies) if self.call is not None else []


class SessionRegistry:
    def __init__(self, pending_ttl_s: float = PENDING_TTL_S, keep_ended: int = KEEP_ENDED,
                 max_pending: int = MAX_PENDING) -> None:
        self.pending_ttl_s = pending_ttl_s
        self.keep_ended = keep_ended
        self.max_pending = max_pending
        self._sessions: dict[str, ApiSession] = {}
        self._pending: OrderedDict[str, ApiSession] = OrderedDict()  # oldest first
        self._ended: OrderedDict[str, None] = OrderedDict()  # oldest first

    def create(self, agent_type: str, language: str, sample_rate: int, caller_number: str | None,
               channel: str = "jsonapi", choices: dict[str, str] | None = None) -> ApiSession:
        self.prune()
        if len(self._pending) >= self.max_pending:
            raise TooManyPending(f"{len(self._pending)} sessions are waiting to be joined on this node")
        token = secrets.token_hex(12)
        session = ApiSession(f"sess-{token}", f"api-{token}", agent_type, language, sample_rate, caller_number,
                             channel, choices=dict(choices or {}), _registry=self)
        self._sessions[session.session_id] = session
        self._pending[session.session_id] = session
        return session

    def get(self, session_id: str) -> ApiSession | None:
        self.prune()
        return self._sessions.get(session_id)

    def moved(self, session: ApiSession) -> None:
        sid = session.session_id
        if session.state is not SessionState.PENDING:
            self._pending.pop(sid, None)
        if session.state is SessionState.ENDED and sid in self._sessions:
            self._ended[sid] = None
            while len(self._ended) > self.keep_ended:
                old, _ = self._ended.popitem(last=False)
                self._sessions.pop(old, None)

    def prune(self) -> None:
        """Forget pending sessions past their TTL: O(expired), oldest first."""
        deadline = time.monotonic() - self.pending_ttl_s
        while self._pending:
            sid, session = next(iter(self._pending.items()))
            if session.created_s > deadline:
                break
            del self._pending[sid]
            self._sessions.pop(sid, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def __len__(self) -> int:
        return len(self._sessions)
