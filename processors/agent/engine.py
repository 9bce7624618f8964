"""The agent interface: a caller's words in, reply sentences out (streamed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from switchboard.records import DialogState

ENDED = "ended"  # DialogState.stage once the agent has said goodbye or handed off


class Agent(Protocol):
    name: str

    def greet(self, state: DialogState) -> AsyncIterator[str]:
        """The opening sentences of a call."""
        ...

    def respond(self, state: DialogState, text: str) -> AsyncIterator[str]:
        """Reply sentences to what the caller said; updates ``state`` (stage, intent, slots)."""
        ...
