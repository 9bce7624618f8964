"""The LLM conversation of one call, kept inside a token budget.

The history lives in ``DialogState.slots`` (JSON), so it rides the ``agent.state``
changelog and survives a rebalance. When it grows past the budget, the oldest
turns are folded into a short running summary (extractive: no extra model call
on the caller's time), and the booking facts stay in the slots the prompt shows.
"""

from __future__ import annotations

import json
from typing import Any

from switchboard.records import DialogState

HISTORY_SLOT = "llm.history"
SUMMARY_SLOT = "llm.summary"
FACT_SLOTS = ("day", "time", "done", "outcome")
TURN_KEY = "turn"  # on assistant messages: the reply's turn_seq, so what the caller heard can be put in its place
_STREAM_CUT = " [interrupted]"  # what the engine appends when its own stream was stopped


def approx_tokens(message: dict[str, Any]) -> int:
    """About 4 characters per token plus framing; close enough to budget with, and free."""
    size = len(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        size += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return 4 + size // 4


class Conversation:
    def __init__(self, state: DialogState, budget_tokens: int, summary_tokens: int = 200) -> None:
        self.state = state
        self.budget = budget_tokens
        self.summary_tokens = summary_tokens
        self.history: list[dict[str, Any]] = json.loads(state.slots.get(HISTORY_SLOT, "[]"))
        self.summary: str = state.slots.get(SUMMARY_SLOT, "")

    def messages(self, system_prompt: str) -> list[dict[str, Any]]:
        system = system_prompt
        facts = {k: v for k, v in self.state.slots.items() if k in FACT_SLOTS}
        if facts:
            system += "\nKnown facts: " + json.dumps(facts)
        if self.summary:
            system += "\nEarlier in this call: " + self.summary
        # the turn tags are ours, not the API's
        return [{"role": "system", "content": system}, *({k: v for k, v in m.items() if k != TURN_KEY}
                                                         for m in self.history)]

    def add(self, message: dict[str, Any]) -> None:
        self.history.append(message)

    def tokens(self) -> int:
        return sum(approx_tokens(m) for m in self.history)

    def fit(self) -> None:
        """Fold the oldest turns into the summary until the history fits the budget (the last turn stays)."""
        while self.tokens() > self.budget:
            starts = [i for i, m in enumerate(self.history) if m["role"] == "user"]
            if len(starts) < 2:
                break
            old, self.history = self.history[: starts[1]], self.history[starts[1] :]
            lines = [
                f"{'caller' if m['role'] == 'user' else 'agent'}: {m['content']}"
                for m in old
                if m["role"] in ("user", "assistant") and m.get("content")
            ]
            self.summary = " | ".join(filter(None, [self.summary, *lines]))
        limit = self.summary_tokens * 4
        if len(self.summary) > limit:
            self.summary = "…" + self.summary[-limit:]

    def tag(self, turn: int) -> None:
        """Mark the assistant messages not yet tagged (the reply just made) as the reply to ``turn``."""
        for m in self.history:
            if m["role"] == "assistant" and TURN_KEY not in m:
                m[TURN_KEY] = turn

    def trim(self, turn: int, heard: str | None, flag: str) -> bool:
        """Keep of the reply to ``turn`` only what the caller heard (``processors.agent.heard``): ``heard`` + ``flag``;
        ``heard`` None = the reply's own text, flagged (how much played is unknown); "" = nothing was heard, the
        reply's text goes. Its tool calls stay (a booking made is made); their interim text goes, since the final
        message holds every sentence said. False when the reply is no longer in the history (folded into the
        summary: it stays as summarised)."""
        mine = [m for m in self.history if m["role"] == "assistant" and m.get(TURN_KEY) == turn]
        if not mine:
            return False
        for m in mine:
            if m.get("tool_calls"):
                m["content"] = None
            elif heard == "":
                self.history.remove(m)
            else:
                own = (m.get("content") or "").removesuffix(flag).removesuffix(_STREAM_CUT)
                m["content"] = (own if heard is None else heard) + flag
        return True

    @staticmethod
    def tag_slots(state: DialogState, turn: int) -> None:
        if HISTORY_SLOT in state.slots:
            conv = Conversation(state, budget_tokens=0)
            conv.tag(turn)
            conv.store()

    @staticmethod
    def trim_slots(state: DialogState, turn: int, heard: str | None, flag: str) -> bool:
        if HISTORY_SLOT not in state.slots:
            return False  # an engine without an LLM history (the policy)
        conv = Conversation(state, budget_tokens=0)
        if not conv.trim(turn, heard, flag):
            return False
        conv.store()
        return True

    def store(self) -> None:
        """Write the history back as it is (``save`` also fits it into the budget)."""
        self.state.slots[HISTORY_SLOT] = json.dumps(self.history, separators=(",", ":"))

    def save(self) -> None:
        self.fit()
        self.store()
        if self.summary:
            self.state.slots[SUMMARY_SLOT] = self.summary
