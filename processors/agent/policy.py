"""A deterministic call-center dialog policy: a clinic's appointment line.

Intents: book, reschedule, cancel, opening hours, talk to a human, goodbye.
Booking and rescheduling collect a day and a time, then confirm; cancelling
collects the day, then confirms. Anything else gets a polite fallback; after
``max_fallbacks`` misunderstandings in a row the caller is handed to a human.

The keypad and a silent caller (README "Silence and the keypad") are answered here too, with fixed sentences
(all in the TTS phrase cache): 0 hands off at any time, 1 and 2 answer a yes/no question as the words would, and
the ingress's silence events get "are you still there?" and, later, a goodbye that ends the call.

A question the caller never heard (the agent was cut off before it: ``unheard``, from ``processors.agent.heard``)
is not taken as asked. Only the confirmation needs guarding: a "yes" to a confirmation never heard must not book or
cancel, so the policy takes a day or time from the caller's words, if any, and asks for the confirmation again (a
key press then means nothing). The other questions need nothing more: an answer the caller gives anyway is welcome
(a day at "which day?"), and words that answer nothing make the policy ask its question again as it always does.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from processors.agent.engine import ENDED
from switchboard.records import DialogState

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
    )
}

INTENT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("human", re.compile(r"\b(human|person|someone|somebody|operator|receptionist|agent|representative|staff)\b")),
    ("reschedule", re.compile(r"\b(reschedul\w*|move|change|postpone)\b")),
    ("cancel", re.compile(r"\b(cancel\w*|call off)\b")),
    ("book", re.compile(r"\b(book\w*|appointment|schedule|see (a|the) doctor|make an? )\b")),
    ("hours", re.compile(r"\b(hours|open\w*|clos\w*|when are you)\b")),
    ("goodbye", re.compile(r"\b(bye|goodbye|that'?s all|nothing else|no thanks?|no thank you)\b")),
)
YES = re.compile(r"\b(yes|yeah|yep|sure|correct|right|please do|go ahead|ok(ay)?|perfect|great)\b")
NO = re.compile(r"\b(no|nope|not|don'?t|wrong)\b")
HANDOFF_KEY = "0"
KEY_ANSWERS = {"1": "yes", "2": "no"}  # a key pressed at a yes/no question stands for these words
YES_NO_STAGES = frozenset({"confirm"})  # stages whose last question was a yes/no one
STILL_THERE = ("Are you still there?",)
LET_GO = ("I'll let you go now. Goodbye.",)
KEYS_HINT = "You can say yes or press 1, or say no or press 2."
UNASKED_SLOT = "policy.unasked"  # the stage whose question the caller did not hear (cut off before it)
TIME = re.compile(
    r"\b(at\s+)?(\d{1,2}|"
    + "|".join(NUMBER_WORDS)
    + r")(?:[:.](\d{2}))?\s*(a\.?\s?m\.?|p\.?\s?m\.?|o'?clock|in the morning|in the afternoon|in the evening)?"
)


def intent_of(text: str) -> str | None:
    t = text.lower()
    for name, pattern in INTENT_PATTERNS:
        if pattern.search(t):
            return name
    return None


def day_of(text: str) -> str | None:
    t = text.lower()
    for d in DAYS:
        if d in t:
            return d.capitalize()
    if "tomorrow" in t:
        return "tomorrow"
    if "today" in t:
        return "today"
    return None


def time_of(text: str) -> str | None:
    t = text.lower()
    if "noon" in t:
        return "12 PM"
    for m in TIME.finditer(t):
        at, hour_s, minutes, suffix = m.groups()
        hour = int(hour_s) if hour_s.isdigit() else NUMBER_WORDS[hour_s]
        # A bare number word is a time only after "at" ("at ten", as Moonshine sometimes writes "at 10 a.m."):
        # elsewhere "one" or "two" is rarely an hour ("one moment", "two of us").
        if not 1 <= hour <= 12 or (suffix is None and at is None and not hour_s.isdigit()):
            continue
        suffix = (suffix or "").replace(".", "").replace(" ", "")
        if suffix.startswith("p") or "afternoon" in suffix or "evening" in suffix:
            half = "PM"
        elif suffix.startswith("a") or "morning" in suffix:
            half = "AM"
        else:
            half = "AM" if 8 <= hour <= 11 else "PM"
        return f"{hour}:{minutes} {half}" if minutes else f"{hour} {half}"
    return None


class ClinicPolicy:
    name = "policy"

    def __init__(self, clinic: str = "Riverside Clinic", max_fallbacks: int = 3) -> None:
        self.clinic = clinic
        self.max_fallbacks = max_fallbacks

    async def greet(self, state: DialogState) -> AsyncIterator[str]:
        state.stage = "await_intent"
        yield f"Thank you for calling {self.clinic}."
        yield "How can I help you today?"

    async def respond(self, state: DialogState, text: str) -> AsyncIterator[str]:
        for sentence in self._respond(state, text):
            yield sentence

    # The policy itself is synchronous and pure: state + words → sentences.
    def _respond(self, state: DialogState, text: str) -> list[str]:
        s = state.slots
        stage = state.stage
        unasked = s.pop(UNASKED_SLOT, None) == stage
        new_intent = intent_of(text)
        if new_intent == "human":
            return self._handoff(state)
        switching = new_intent in ("cancel", "reschedule", "book", "hours") and new_intent != state.intent
        if stage in ("ask_day", "ask_time", "confirm") and switching and not (
            stage == "confirm" and YES.search(text.lower())
        ):
            stage = "await_intent"
        if stage == "ask_day":
            return self._collect(state, text)
        if stage == "ask_time":
            return self._collect(state, text)
        if stage == "confirm" and unasked:
            return self._ask_confirmation_again(state, text)
        if stage == "confirm":
            return self._confirm(state, text)
        # await_intent
        if new_intent is None:
            return self._fallback(state)
        s.pop("fallbacks", None)
        state.intent = new_intent
        if new_intent == "hours":
            return [
                "We are open Monday to Friday from 8 AM to 6 PM, and on Saturday from 9 AM to 1 PM.",
                "Is there anything else I can help you with?",
            ]
        if new_intent == "goodbye":
            state.stage = ENDED
            s["outcome"] = s.get("outcome", "resolved" if s.get("done") else "abandoned")
            return [f"Thank you for calling {self.clinic}.", "Goodbye!"]
        for k in ("day", "time"):
            s.pop(k, None)
        return self._collect(state, text)

    def _collect(self, state: DialogState, text: str) -> list[str]:
        s = state.slots
        if "day" not in s and (day := day_of(text)):
            s["day"] = day
        if state.intent != "cancel" and "time" not in s and (t := time_of(text)):
            s["time"] = t
        if "day" not in s:
            state.stage = "ask_day"
            return [
                "Which day would suit you?"
                if state.intent != "cancel"
                else "Which day is the appointment you would like to cancel?"
            ]
        if state.intent != "cancel" and "time" not in s:
            state.stage = "ask_time"
            return [f"What time on {s['day']} works best for you?"]
        state.stage = "confirm"
        if state.intent == "cancel":
            return [f"Just to confirm, you want to cancel your appointment on {s['day']}?"]
        verb = "move your appointment to" if state.intent == "reschedule" else "book you in for"
        return [f"Just to confirm, I'll {verb} {s['day']} at {s['time']}.", "Is that right?"]

    def _confirm(self, state: DialogState, text: str) -> list[str]:
        s = state.slots
        t = text.lower()
        if YES.search(t) and not re.search(r"\b(no|not)\b", t):
            state.stage = "await_intent"
            s["done"] = "true"
            s["outcome"] = "resolved"
            done = {
                "book": f"You're booked for {s['day']} at {s.get('time')}.",
                "reschedule": f"Your appointment is now on {s['day']} at {s.get('time')}.",
                "cancel": f"Your appointment on {s['day']} is cancelled.",
            }[state.intent or "book"]
            return [done, "Is there anything else I can help you with?"]
        if NO.search(t):
            s.pop("day", None)
            s.pop("time", None)
            state.stage = "ask_day"
            return ["No problem.", "Which day would suit you better?"]
        return ["Sorry, was that a yes or a no?", KEYS_HINT]

    def _ask_confirmation_again(self, state: DialogState, text: str) -> list[str]:
        """The confirmation was cut off before the caller heard it: their words are no yes or no to it."""
        s = state.slots
        if day := day_of(text):
            s["day"] = day
        if state.intent != "cancel" and (t := time_of(text)):
            s["time"] = t
        return self._collect(state, "")

    def _fallback(self, state: DialogState) -> list[str]:
        n = int(state.slots.get("fallbacks", "0")) + 1
        state.slots["fallbacks"] = str(n)
        if n >= self.max_fallbacks:
            return self._handoff(state)
        return [
            "Sorry, I didn't quite get that.",
            "I can book, reschedule or cancel an appointment, or tell you our opening hours.",
            "What would you like to do?",
        ]

    def _handoff(self, state: DialogState) -> list[str]:
        return handoff(state)


def handoff(state: DialogState) -> list[str]:
    """To a human: the call ends here (the transfer itself is the telephony's), outcome ``handoff``."""
    state.intent = "human"
    state.stage = ENDED
    state.slots["outcome"] = "handoff"
    return ["Let me put you through to one of our staff.", "Please hold."]


def key_answer(state: DialogState, digit: str) -> str | None:
    """The words a key stands for at this point of the dialog, or None when it means nothing here (also when the
    yes/no question was cut off before the caller heard it)."""
    if state.stage not in YES_NO_STAGES or state.slots.get(UNASKED_SLOT) == state.stage:
        return None
    return KEY_ANSWERS.get(digit)


def unheard(state: DialogState, sentences: list[str], fully_heard: int) -> bool:
    """The agent's reply (``sentences``) was cut off after ``fully_heard`` sentences. If its last question was
    not heard to its end, the current stage's question counts as not asked (see the module's doc). Dialog states
    of other engines (the LLM's stage is always await_intent) are left alone, as are replies without a question."""
    asked = [i for i, s in enumerate(sentences) if s.rstrip().endswith("?")]
    if not asked or asked[-1] < fully_heard or state.stage not in ("ask_day", "ask_time", "confirm"):
        return False
    state.slots[UNASKED_SLOT] = state.stage
    return True


def still_there(state: DialogState) -> list[str]:
    """The caller has been silent a while: ask, leaving the dialog where it was (not a caller turn)."""
    return list(STILL_THERE)


def let_go(state: DialogState) -> list[str]:
    """The caller stayed silent: say goodbye and end the call; the outcome stays what the call had reached."""
    state.stage = ENDED
    state.slots["outcome"] = state.slots.get("outcome", "resolved" if state.slots.get("done") else "abandoned")
    return list(LET_GO)
