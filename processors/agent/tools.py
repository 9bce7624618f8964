"""The sample scenario's tools for the LLM agent: look up and book appointment slots, hand off, end the call.

Tool results update the ``DialogState`` the same way the offline policy does
(intent, stage, ``day``/``time``/``done``/``outcome`` slots), so analytics and a
mid-call switch to the policy see one consistent state.
"""

from __future__ import annotations

import json
from typing import Any

from processors.agent.engine import ENDED
from processors.agent.policy import DAYS
from switchboard.records import DialogState

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "find_slots",
            "description": "Free appointment times on a day.",
            "parameters": {
                "type": "object",
                "properties": {"day": {"type": "string", "description": "weekday"}},
                "required": ["day"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_slot",
            "description": "Book the caller into a free slot once they have confirmed it.",
            "parameters": {
                "type": "object",
                "properties": {"day": {"type": "string"}, "time": {"type": "string"}},
                "required": ["day", "time"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "hand_off",
            "description": "Transfer the caller to a human member of staff.",
            "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "end_call",
            "description": "End the call after saying goodbye.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]

OPEN_TIMES = ("9 AM", "10 AM", "11 AM", "2 PM", "3 PM", "4 PM")


class ClinicTools:
    """A tiny in-process appointment book (the sample scenario's backend)."""

    schemas = SCHEMAS

    def __init__(self) -> None:
        self.booked: set[tuple[str, str]] = set()

    def free(self, day: str) -> list[str]:
        d = day.strip().capitalize()
        if d.lower() not in DAYS[:5]:
            return []
        return [t for t in OPEN_TIMES if (d, t) not in self.booked]

    def run(self, state: DialogState, name: str, arguments: str) -> str:
        """Execute one tool call; the JSON result is fed back to the model."""
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            return json.dumps({"error": "arguments are not valid JSON"})
        s = state.slots
        if name == "find_slots":
            day = str(args.get("day", ""))
            return json.dumps({"day": day.capitalize(), "free": self.free(day)})
        if name == "book_slot":
            day, time = str(args.get("day", "")).capitalize(), str(args.get("time", "")).upper()
            if time not in self.free(day):
                return json.dumps({"booked": False, "reason": "slot not free", "free": self.free(day)})
            self.booked.add((day, time))
            state.intent = state.intent if state.intent in ("book", "reschedule") else "book"
            s.update(day=day, time=time, done="true", outcome="resolved")
            return json.dumps({"booked": True, "day": day, "time": time})
        if name == "hand_off":
            state.intent, state.stage = "human", ENDED
            s["outcome"] = "handoff"
            return json.dumps({"transferring": True})
        if name == "end_call":
            state.stage = ENDED
            s["outcome"] = s.get("outcome", "resolved" if s.get("done") else "abandoned")
            return json.dumps({"ending": True})
        return json.dumps({"error": f"unknown tool {name}"})
