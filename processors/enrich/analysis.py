"""The enrichment models, offline and deterministic: VADER sentiment, keyword
intents, outcome rules and an extractive summary. Pure functions of a call's notes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import version

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

MODEL = f"vader-{version('vaderSentiment')}+rules-1"

# Generic call-center intents, for calls whose agent engine names none (e.g. an LLM).
INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("human", re.compile(r"\b(human|real person|operator|receptionist|representative|speak to (someone|somebody))\b")),
    ("reschedule", re.compile(r"\b(reschedul\w*|move my|change my appointment|postpone)\b")),
    ("cancel", re.compile(r"\b(cancel\w*)\b")),
    ("book", re.compile(r"\b(book\w*|appointment|schedule)\b")),
    ("billing", re.compile(r"\b(bill\w*|invoice|payment|charge\w*|refund)\b")),
    ("hours", re.compile(r"\b(hours|open\w*|clos\w*)\b")),
)
CLOSING_INTENTS = {"goodbye", "greeting", ""}
HANDOFF_TEXT = re.compile(r"\b(put you through|transfer(ring)? you|connect you (with|to)|one of our staff)\b", re.I)
DONE_TEXT = re.compile(r"\b(you'?re booked|is cancell?ed|is now on|have booked|all set|confirmed)\b", re.I)


@cache
def _vader() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> float:
    """VADER compound score in [-1, 1]."""
    return float(_vader().polarity_scores(text)["compound"]) if text.strip() else 0.0


def label(score: float) -> str:
    return "positive" if score >= 0.05 else "negative" if score <= -0.05 else "neutral"


def keyword_intent(text: str) -> str | None:
    t = text.lower()
    for name, pattern in INTENTS:
        if pattern.search(t):
            return name
    return None


@dataclass(slots=True)
class CallNotes:
    """What the enricher remembers of one call until it has been summarised."""

    call_id: str
    channel: str = ""
    started_us: int | None = None
    ended_us: int | None = None
    end_reason: str = ""
    caller: dict[int, str] = field(default_factory=dict)  # turn_seq → final transcript
    agent: list[tuple[int, int, str]] = field(default_factory=list)  # (turn_seq, seq, sentence)
    intents: list[str] = field(default_factory=list)  # agent-recognised intents, in order
    dialog_intent: str | None = None
    dialog_outcome: str | None = None
    dialog_done: bool = False
    seen_us: int = 0
    partition: int = 0
    first_offsets: dict[str, int] = field(default_factory=dict)  # topic name → first offset of this call


@dataclass(slots=True)
class Enrichment:
    summary: str
    sentiment: float
    turn_sentiment: dict[str, float]
    intent: str | None
    goal_reached: bool
    handed_off: bool
    outcome: str


def main_intent(notes: CallNotes) -> str | None:
    for candidate in [*notes.intents, notes.dialog_intent]:
        if candidate and candidate not in CLOSING_INTENTS and candidate != "human":
            return candidate
    if "human" in notes.intents or notes.dialog_intent == "human":
        return "human"
    for turn in sorted(notes.caller):
        if found := keyword_intent(notes.caller[turn]):
            return found
    return None


def enrich(notes: CallNotes, max_chars: int = 400) -> Enrichment:
    turns = {str(t): round(sentiment(text), 4) for t, text in sorted(notes.caller.items())}
    call_score = round(sum(turns.values()) / len(turns), 4) if turns else 0.0
    agent_text = " ".join(s for _, _, s in sorted(notes.agent))
    handed_off = (notes.dialog_outcome == "handoff" or notes.dialog_intent == "human"
                  or bool(HANDOFF_TEXT.search(agent_text)))
    goal = not handed_off and (notes.dialog_outcome == "resolved" or notes.dialog_done
                               or bool(DONE_TEXT.search(agent_text)))
    if handed_off:
        outcome = "handoff"
    elif goal:
        outcome = "resolved"
    elif notes.dialog_outcome == "abandoned" or not notes.caller:
        outcome = "abandoned"
    else:
        outcome = "unresolved"
    intent = main_intent(notes)
    return Enrichment(_summary(notes, intent, outcome, call_score, max_chars), call_score, turns, intent, goal,
                      handed_off, outcome)


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _summary(notes: CallNotes, intent: str | None, outcome: str, score: float, max_chars: int) -> str:
    parts = []
    duration = ""
    if notes.started_us and notes.ended_us:
        duration = f", {(notes.ended_us - notes.started_us) / 1e6:.0f} s"
    parts.append(f"{notes.channel or 'call'} call, {len(notes.caller)} caller turn(s){duration}.")
    parts.append(f"Intent: {intent or 'unknown'}; outcome: {outcome}; caller sentiment {label(score)} ({score:+.2f}).")
    if notes.caller:
        first = notes.caller[min(notes.caller)]
        parts.append(f'Caller: "{_clip(first, 100)}"')
    agent = [s for _, _, s in sorted(notes.agent)]
    key = next((s for s in reversed(agent) if DONE_TEXT.search(s) or HANDOFF_TEXT.search(s)), None)
    if key:
        parts.append(f'Agent: "{_clip(key, 100)}"')
    return _clip(" ".join(parts), max_chars)
