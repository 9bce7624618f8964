"""Sessions of the JSON API on this node: issued by ``POST /api/v1/calls/start``, joined by the websocket.

A session lives on the node that issued it (its websocket must reach the same
node, as the returned ``websocket_url`` does). Unjoined sessions expire after
``PENDING_TTL_S``; ended ones are kept (the newest ``KEEP_ENDED``) so their
per-turn latencies can still be read from the metrics endpoint.
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


class SessionState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    ENDED = "ended"


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
    state: SessionState = SessionState.PENDING
    end_reason: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    created_s: float = field(default_factory=time.monotonic)
    call: CallSession | None = None

    @property
    def latencies(self) -> list[TurnLatency]:
        return list(self.call.turn_latencies) if self.call is not None else []


class SessionRegistry:
    def __init__(self, pending_ttl_s: float = PENDING_TTL_S, keep_ended: int = KEEP_ENDED) -> None:
        self.pending_ttl_s = pending_ttl_s
        self.keep_ended = keep_ended
        self._sessions: OrderedDict[str, ApiSession] = OrderedDict()

    def create(self, agent_type: str, language: str, sample_rate: int, caller_number: str | None,
               channel: str = "jsonapi", choices: dict[str, str] | None = None) -> ApiSession:
        self.prune()
        token = secrets.token_hex(12)
        session = ApiSession(f"sess-{token}", f"api-{token}", agent_type, language, sample_rate, caller_number,
                             channel, choices=dict(choices or {}))
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str) -> ApiSession | None:
        self.prune()
        return self._sessions.get(session_id)

    def prune(self) -> None:
        now = time.monotonic()
        expired = [s.session_id for s in self._sessions.values()
                   if s.state is SessionState.PENDING and now - s.created_s > self.pending_ttl_s]
        for sid in expired:
            del self._sessions[sid]
        ended = [s.session_id for s in self._sessions.values() if s.state is SessionState.ENDED]
        for sid in ended[: max(0, len(ended) - self.keep_ended)]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
