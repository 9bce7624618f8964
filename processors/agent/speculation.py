"""The speculative reply: the agent answers the early transcript before the turn is confirmed.

At ~200 ms of silence STT publishes the turn so far as an ``early`` transcript. The agent makes its reply to it at
once, on a *copy* of the call's state (slots deep-copied: the policy's stage and the LLM's history live there), and
publishes the sentences as ``speculative`` replies: TTS synthesises them into a per-call hold and plays nothing.

- The FINAL transcript of that turn with the same words (case and spacing aside) confirms it: the agent adopts the
  copy as the call's state and re-publishes the sentences as SENTENCE records (same text, same seq) and an END; TTS
  sends the held audio at once. The reply was made during the silence, so the caller does not wait for it.
- Anything else throws it away (a DISCARD record, TTS drops the hold): a newer early transcript (the caller went on
  and paused again), a final with other words, a barge-in or a hang-up that stopped it, a change of the real state
  in between (a key press, a reply trimmed to what was heard). The real state never saw it, so it is in no history
  and recorded nowhere as said. Slots the real state changed without a new version (playback notes) are carried
  over onto the copy when it is adopted (``rebase``).

Two things confirm it, whichever reaches the agent first:
- **The turns processor's END_OF_TURN**, when it names the pause the turn ended silent after (``early_audio_ms``) and
  that pause's early transcript, the one answered, ``stands_for_turn`` (STT decoded the whole turn so far: with no
  voice after the pause it publishes that decode as the final, word for word). The answer then starts one bus hop
  after the end of the turn, not two hops and STT's turn later (``confirmed_by``).
- **The FINAL** with the same words: for every other case (the caller went on after the pause, an engine whose
  final is decoded again, such as Azure, or an END that came before the early transcript did).
The end-of-turn event alone cannot say which words stand for the turn; the early transcript's ``audio_ms`` and
the event's ``early_audio_ms`` tie the two together. The FINAL that follows an adopted reply is for the record only
(its turn is answered: ``last_turn_seq``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

from switchboard import metrics
from switchboard.records import DialogState, Transcript, TurnEvent

_PUNCTUATION = re.compile(r"[^\w\s']+")
OFFLINE_ENGINES = frozenset({"policy"})  # engines whose discarded speculation costs nothing but a few ms of CPU


class SpeculationMode(StrEnum):
    OFF = "off"
    OFFLINE = "offline"  # only when the call's engine is offline (its speculation is free)
    ALWAYS = "always"  # cloud LLMs too: discarded speculation costs tokens (counted)


def allowed(mode: SpeculationMode | str, engine: str) -> bool:
    mode = SpeculationMode(mode)
    return mode is SpeculationMode.ALWAYS or (mode is SpeculationMode.OFFLINE and engine in OFFLINE_ENGINES)


def normalised(text: str) -> str:
    """The words as the comparison sees them: case, spacing and punctuation do not make another turn (a decode of
    the same audio may end "Tuesday" or "Tuesday."; an answer to one is an answer to the other)."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


@dataclass(slots=True)
class Speculation:
    turn_seq: int
    words: str  # normalised text it answers
    state: DialogState  # the copy, as the engine left it
    base_updated_us: int  # the real state's updated_us when copied: a change since makes the copy stale
    base_slots: dict[str, str]  # the real state's slots when copied: what changed since is carried over (rebase)
    engine: str
    # the early transcript it answers: the latest pause's, when the caller paused again on the same words. Its
    # audio_ms names the pause, stands_for_turn says it becomes the turn's final if the caller says no more, and
    # ts_us is when it was made (the turn's early_transcript_us)
    early: Transcript
    sentences: list[str] = field(default_factory=list)
    complete: bool = False  # the engine finished the reply (not stopped by a barge-in or hang-up)
    tokens: int = 0  # LLM tokens it cost (in + out), counted if thrown away


def fork(state: DialogState, early: Transcript, engine: str) -> Speculation:
    """A speculation on a deep copy of ``state`` answering the ``early`` transcript, advanced as the FINAL branch
    advances a turn."""
    twin = replace(state, slots=copy.deepcopy(state.slots))
    twin.last_turn_seq = early.turn_seq
    twin.turns += 1
    return Speculation(early.turn_seq, normalised(early.text), twin, state.updated_us, dict(state.slots), engine, early)


def confirms(spec: Speculation, state: DialogState, turn_seq: int, text: str) -> bool:
    """Whether the FINAL (``turn_seq``, ``text``) confirms ``spec``, made on ``state`` as it still is."""
    return (
        spec.complete
        and spec.turn_seq == turn_seq
        and spec.words == normalised(text)
        and spec.base_updated_us == state.updated_us
        and rebase(spec, state)
    )


def ends_silent_after(spec: Speculation, state: DialogState, end: TurnEvent) -> bool:
    """Whether the END_OF_TURN ``end`` confirms ``spec``: the turn ended with no voice after the very pause whose
    early transcript it answered, and that transcript stands for the turn (STT's final will be those words)."""
    return (
        spec.complete
        and spec.early.stands_for_turn
        and spec.turn_seq == end.turn_seq
        and end.early_audio_ms is not None
        and spec.early.audio_ms == end.early_audio_ms
        and end.end_reason != "backchannel"  # "uh-huh" over a reply takes no turn: nothing is answered
        and spec.base_updated_us == state.updated_us
        and rebase(spec, state)
    )


def rebase(spec: Speculation, state: DialogState) -> bool:
    """Carry the slots the real state changed since the fork onto the copy: playback notes of the previous reply
    (processors/agent/heard.py) may come between the early transcript and the final without bumping updated_us.
    False (the copy is not used) when the engine changed one of those slots too: the two cannot be merged."""
    base = spec.base_slots
    changed = {k for k in state.slots.keys() | base.keys() if state.slots.get(k) != base.get(k)}
    if any(spec.state.slots.get(k) != base.get(k) for k in changed):
        return False
    for k in changed:
        if k in state.slots:
            spec.state.slots[k] = state.slots[k]
        else:
            spec.state.slots.pop(k, None)
    return True


def thrown_away(spec: Speculation, outcome: str) -> None:
    """Count a speculation that will not be said (``discarded`` or ``mismatch``) and what it cost."""
    metrics.SPECULATION.labels(outcome).inc()
    if spec.tokens:
        metrics.SPECULATION_DISCARDED_TOKENS.labels(spec.engine).inc(spec.tokens)
