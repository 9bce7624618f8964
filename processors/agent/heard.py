"""What the caller heard of the agent's reply: the conversation keeps that, never the unplayed remainder.

A reply's sentences are generated (and synthesised) well before they play, and a caller who barges in cuts the
agent off mid-sentence. The ingress says how far playback got in its PLAYBACK_CLEARED event (``turn_seq`` = the
reply's turn; attributes ``sentences_heard``, ``cut_sentence``, ``cut_fraction``, ``heard_ms``). The agent then
trims the reply in the dialog state to what played:

- the sentences heard to their end, plus the first ``round(words × cut_fraction)`` words of the cut sentence
  followed by "—" (half up, as the analytics view ``agent_turns`` rounds: both must show the same words);
- flagged: the LLM history's assistant message ends with ``FLAG`` and ``HEARD_SLOT`` records the cut reply;
- nothing at all when nothing played (a queued reply that never started): its assistant message is removed.

A PLAYBACK_CLEARED without the positions (an older ingress) means nothing was heard if the reply never started
playing (no PLAYBACK_STARTED seen for it), else the agent keeps what it had, flagged.

To do that the agent remembers the sentences of its recent replies in ``DialogState.slots`` (``RECENT_SLOT``), so a
rebalance keeps them (the ``agent.state`` changelog). Only replies whose playback is not settled are kept, at most
``KEEP``: the clear of reply N may arrive after the caller's next transcript (different topics), when reply N+1 was
already made. A reply that played to its end (PLAYBACK_FINISHED) is forgotten: nothing changes for it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from processors.agent import policy
from processors.agent.conversation import Conversation
from switchboard import metrics
from switchboard.records import CallEvent, DialogState

logger = logging.getLogger(__name__)

RECENT_SLOT = "reply.recent"  # JSON list, oldest first: {"turn", "sentences", "started", "dialog"} per unsettled reply
HEARD_SLOT = "reply.heard"  # JSON of the last reply cut short: {"turn", "heard", "sentences_heard", "interrupted"}
FLAG = " [interrupted by the caller]"
CUT_MARK = "—"
KEEP = 2  # the reply being played and the one made after it (the clear may come after the next transcript)
POSITION_KEYS = ("sentences_heard", "cut_sentence", "cut_fraction")


class BadPlayback(ValueError):
    """A PLAYBACK_CLEARED whose positions cannot be read."""


@dataclass(frozen=True, slots=True)
class Played:
    """How far a reply played before it was cut (the ingress's PLAYBACK_CLEARED attributes)."""

    sentences_heard: int  # sentences (AgentReply seq 0, 1, …) played to their end
    cut_sentence: int | None  # seq of the sentence playing when cut; None when cut between sentences
    cut_fraction: float  # share of that sentence's audio played, 0–1
    heard_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Trimmed:
    """What became of one cut reply: the text kept and how many sentences were heard, cut or unplayed."""

    turn: int
    heard: str
    heard_sentences: int
    cut: int
    unplayed: int
    unknown: int  # an ingress that did not say how far it played, after the reply had started


def played(attributes: dict[str, str]) -> Played | None:
    """The positions of a PLAYBACK_CLEARED, or None when the ingress gave none. Raises ``BadPlayback``."""
    if "sentences_heard" not in attributes:
        return None
    try:
        heard = int(attributes["sentences_heard"])
        cut_s = attributes.get("cut_sentence", "").strip()
        cut = int(cut_s) if cut_s else None
        fraction = float(attributes.get("cut_fraction", "0") or "0")
        ms_s = attributes.get("heard_ms", "").strip()
        heard_ms = int(float(ms_s)) if ms_s else None
    except ValueError as exc:
        raise BadPlayback(f"unreadable playback position: {exc}") from None
    if heard < 0 or (cut is not None and cut < 0) or not 0.0 <= fraction <= 1.0:
        raise BadPlayback(f"playback position out of range: sentences_heard={heard} cut_sentence={cut} "
                          f"cut_fraction={fraction}")
    return Played(heard, cut, fraction, heard_ms)


def cut_words(sentence: str, fraction: float) -> str:
    """The words of a sentence cut at ``fraction`` of its audio, then "—"; "" when none of its words played."""
    words = sentence.split()
    n = min(len(words), math.floor(len(words) * fraction + 0.5))
    return " ".join(words[:n]) + CUT_MARK if n > 0 else ""


def heard_sentences(sentences: list[str], p: Played) -> list[str]:
    """The sentences as the caller heard them: the ones played to their end, then the cut one's played words."""
    out = list(sentences[: p.sentences_heard])
    cut = p.cut_sentence
    # the sentence playing is the one after those played whole: any other index is inconsistent, and left out
    if cut == p.sentences_heard and cut < len(sentences) and (part := cut_words(sentences[cut], p.cut_fraction)):
        out.append(part)
    return out


def _recent(state: DialogState) -> list[dict[str, Any]]:
    try:
        value = json.loads(state.slots.get(RECENT_SLOT, "[]"))
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _save_recent(state: DialogState, recent: list[dict[str, Any]]) -> None:
    if recent:
        state.slots[RECENT_SLOT] = json.dumps(recent[-KEEP:], separators=(",", ":"))
    else:
        state.slots.pop(RECENT_SLOT, None)


def remember(state: DialogState, turn: int, sentences: list[str], dialog: bool = True) -> None:
    """After a reply was made: keep its sentences until its playback is settled, and tag its LLM messages.
    ``dialog`` False: fixed sentences outside the dialog (a silence prompt), whose question is not the stage's."""
    if not sentences:
        return
    recent = [r for r in _recent(state) if r.get("turn") != turn]
    recent.append({"turn": turn, "sentences": sentences, "started": False, "dialog": dialog})
    _save_recent(state, recent)
    Conversation.tag_slots(state, turn)


def started(state: DialogState, turn: int) -> None:
    """PLAYBACK_STARTED: the reply reached the caller's ear (matters only to a clear without positions).
    Not published on its own: one changelog record per reply for an older ingress's sake is not worth it."""
    recent = _recent(state)
    for r in recent:
        if r.get("turn") == turn:
            r["started"] = True
            _save_recent(state, recent)
            return


def finished(state: DialogState, turn: int) -> bool:
    """PLAYBACK_FINISHED: the reply played to its end; forget it. True when it was one of ours."""
    recent = _recent(state)
    done = [r for r in recent if r.get("turn") == turn]
    if not done:
        return False
    metrics.REPLY_SENTENCES.labels("heard").inc(len(done[0].get("sentences", ())))
    _save_recent(state, [r for r in recent if r.get("turn") != turn])
    return True


def trim(state: DialogState, event: CallEvent) -> Trimmed | None:
    """PLAYBACK_CLEARED: keep in ``state`` only what the caller heard of the reply it names (see the module's
    doc). None when that reply is not remembered (settled already, a replay, another agent's filler)."""
    turn = event.turn_seq
    recent = _recent(state)
    entry = next((r for r in recent if r.get("turn") == turn), None)
    if turn is None or entry is None:
        return None
    sentences = [str(s) for s in entry.get("sentences", [])]
    try:
        p = played(event.attributes)
        metrics.PLAYBACK_REPORTS.labels("positions" if p is not None else "no_positions").inc()
    except BadPlayback as exc:
        metrics.PLAYBACK_REPORTS.labels("malformed").inc()
        logger.warning("playback positions unreadable; treated as not given", extra={"fields": {
            "turn": turn, "error": str(exc)}})
        p = None
    history: str | None  # what the LLM history keeps: None = its own text, flagged
    if p is not None:
        kept = heard_sentences(sentences, p)
        full = min(p.sentences_heard, len(sentences))
        cut = len(kept) - full
        result = Trimmed(turn, " ".join(kept), full, cut, len(sentences) - full - cut, 0)
        history = result.heard
    elif entry.get("started"):
        result = Trimmed(turn, " ".join(sentences), 0, 0, 0, len(sentences))
        full, history = len(sentences), None
    else:  # queued, never started: nothing of it was heard
        result = Trimmed(turn, "", 0, 0, len(sentences), 0)
        full, history = 0, ""
    for outcome, n in (("heard", result.heard_sentences), ("cut", result.cut), ("unplayed", result.unplayed),
                       ("unknown", result.unknown)):
        if n:
            metrics.REPLY_SENTENCES.labels(outcome).inc(n)
    newest = recent[-1] is entry
    Conversation.trim_slots(state, turn, history, FLAG)
    if newest and entry.get("dialog", True):  # the stage is still the one this reply left: was its question heard?
        policy.unheard(state, sentences, full)
    state.slots[HEARD_SLOT] = json.dumps({"turn": turn, "heard": result.heard, "interrupted": True,
                                          "sentences_heard": None if p is None else result.heard_sentences},
                                         separators=(",", ":"))
    _save_recent(state, [r for r in recent if r is not entry])
    return result
