"""Never dead air on the agent stage: a cloud agent behind a breaker, with the offline policy behind it.

``ResilientAgent`` streams the cloud agent's sentences under deadlines (first
sentence, then between sentences) through the engine's circuit breaker. When
the cloud agent fails mid-call (error, rate limit, hung stream), the caller
hears the fallback utterance at once (its audio is in the TTS phrase cache),
then the offline agent answers the same words, and the offline agent keeps the
rest of the call. While the breaker is open, new calls start on the offline
agent; once the breaker lets a trial call through and it succeeds, new calls go
back to the cloud.

``AgentRouter`` picks the agent per call: ``state.slots["engine"]`` (set from
the call-start parameter ``engines``, or by a fallback), else the deployment's
default.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from processors.agent.engine import ENDED, Agent
from processors.resilience import FALLBACKS, EngineGuard, Fallback, Journal, describe, guarded_stream
from switchboard.records import DialogState

logger = logging.getLogger(__name__)

ENGINE_SLOT = "engine"
POLICY_STAGES = frozenset({"greeting", "await_intent", "ask_day", "ask_time", "confirm", ENDED})
FALLBACK_PHRASE = "Sorry, give me a moment."


class ResilientAgent:
    def __init__(
        self,
        primary: Agent,
        offline: Agent,
        guard: EngineGuard,
        journal: Journal,
        *,
        first_sentence_s: float = 2.5,
        next_sentence_s: float = 2.5,
        fallback_phrase: str = FALLBACK_PHRASE,
    ) -> None:
        self.primary, self.offline = primary, offline
        self.name = primary.name
        self.guard = guard
        self.journal = journal
        self.first_sentence_s = first_sentence_s
        self.next_sentence_s = next_sentence_s
        self.fallback_phrase = fallback_phrase

    def greet(self, state: DialogState) -> AsyncIterator[str]:
        # The greeting is not a model call: it must not count as a success that closes the breaker.
        return self._run(state, lambda agent: agent.greet(state), guarded=False)

    def respond(self, state: DialogState, text: str) -> AsyncIterator[str]:
        return self._run(state, lambda agent: agent.respond(state, text))

    async def _run(
        self, state: DialogState, speak: Callable[[Agent], AsyncIterator[str]], guarded: bool = True
    ) -> AsyncIterator[str]:
        if state.slots.get(ENGINE_SLOT) == self.offline.name:
            async for sentence in speak(self.offline):
                yield sentence
            return
        if not self.guard.available:
            self._switch(state, f"{self.guard.stage} breaker open")
            async for sentence in speak(self.offline):
                yield sentence
            return
        state.slots[ENGINE_SLOT] = self.primary.name
        if not guarded:
            async for sentence in speak(self.primary):
                yield sentence
            return

        try:
            primary = guarded_stream(
                self.guard, lambda: speak(self.primary), self.first_sentence_s, self.next_sentence_s
            )
            async for sentence in primary:
                yield sentence
        except Exception as exc:
            self._switch(state, describe(exc))
            yield self.fallback_phrase
            async for sentence in speak(self.offline):
                yield sentence

    def _switch(self, state: DialogState, reason: str) -> None:
        """The rest of this call goes to the offline agent."""
        FALLBACKS.labels("agent", self.primary.name, self.offline.name).inc()
        logger.warning(
            "agent fallback", extra={"fields": {"from": self.primary.name, "to": self.offline.name, "reason": reason}}
        )
        state.slots[ENGINE_SLOT] = self.offline.name
        if state.stage not in POLICY_STAGES:
            state.stage = "await_intent"
        self.journal.add(state.call_id, Fallback("agent", self.primary.name, self.offline.name, reason))


class AgentRouter:
    """The deployment's agents by name; each call uses the one its state names, else the default."""

    def __init__(self, agents: dict[str, Agent], default: str, journal: Journal) -> None:
        self.agents = agents
        self.default = default
        self.name = default
        self.journal = journal

    def accepts(self, name: str) -> bool:
        return name in self.agents

    def choose(self, state: DialogState) -> Agent:
        return self.agents.get(state.slots.get(ENGINE_SLOT, self.default), self.agents[self.default])

    def greet(self, state: DialogState) -> AsyncIterator[str]:
        return self.choose(state).greet(state)

    def respond(self, state: DialogState, text: str) -> AsyncIterator[str]:
        return self.choose(state).respond(state, text)
