"""What the caller heard of a reply, and a reply held by a pause (README "Interruptions").

The ingress writes agent audio at most ``lead`` ahead of real time, so at any moment the phone still holds the frames
written in the last ``lead``: the pacing clock (when the next frame is due to play) says how many. A reply's audio is
numbered by TTS ``sentence × SEQ_STRIDE + i``, so the ingress knows which sentence each frame belongs to, and:

- on ``pause`` (caller voice over the reply, not yet judged) it sends the channel's clear, takes back the frames the
  phone had not played yet and puts them back at the head of the queue: ``resume`` plays on from the exact frame the
  caller had reached (at most one 20 ms frame is repeated or lost to rounding);
- on ``clear`` (a real interruption) it does the same take-back and reports what was heard: ``sentences_heard``,
  ``cut_sentence``, ``cut_fraction``, ``heard_ms`` (the PLAYBACK_CLEARED contract, see ``ReplyAudio.heard``).

On Twilio each sentence's end is also marked (``s{turn}.{sentence}``) and the echoes, which Twilio sends once the
audio before the mark has played, are kept: a sentence whose echo came counts as heard whatever the clock says.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEQ_STRIDE = 10_000  # processors/tts/logic.py: chunk i of sentence s is s × SEQ_STRIDE + i (the ingress must agree)
FRAME_S = 0.02


def sentence_of(seq: int) -> int:
    return max(0, seq) // SEQ_STRIDE


def sentence_mark(turn_seq: int, sentence: int) -> str:
    """The Twilio mark after a sentence's last audio; Twilio echoes it once that audio has played."""
    return f"s{turn_seq}.{sentence}"


def parse_sentence_mark(name: str) -> tuple[int, int] | None:
    if not name.startswith("s") or "." not in name:
        return None
    turn, _, sentence = name[1:].partition(".")
    try:
        return int(turn), int(sentence)
    except ValueError:
        return None


def frames_on_phone(clock: float, now: float) -> int:
    """Frames written whose playing has not begun: the pacing clock (when the next frame is due) is that far ahead of
    now. A frame already begun counts as heard (the clear cuts its tail), so a resume never repeats audio."""
    return max(0, int((clock - now) / FRAME_S + 1e-6))


@dataclass(slots=True)
class ReplyAudio:
    """One reply at the ingress: audio received and written per sentence, and the frames the phone may still hold."""

    turn_seq: int
    keep_frames: int  # how many written frames to remember: at least the playout lead
    received: dict[int, int] = field(default_factory=dict)  # sentence → samples received from TTS
    written: dict[int, int] = field(default_factory=dict)  # sentence → samples written and not taken back
    recent: deque[tuple[int, int, np.ndarray]] = field(default_factory=deque)  # (seq, sentence, samples) newest last
    echoed: set[int] = field(default_factory=set)  # sentences whose Twilio mark came back
    ended: bool = False  # its END came: the last sentence is whole

    def receive(self, seq: int, samples: int) -> None:
        s = sentence_of(seq)
        self.received[s] = self.received.get(s, 0) + samples

    def wrote(self, seq: int, samples: np.ndarray) -> None:
        """One frame written to the socket (``samples``: its real audio, before any padding to 20 ms)."""
        s = sentence_of(seq)
        self.written[s] = self.written.get(s, 0) + len(samples)
        self.recent.append((seq, s, samples))
        while len(self.recent) > self.keep_frames:
            self.recent.popleft()

    def take_back(self, frames: int) -> list[tuple[int, np.ndarray]]:
        """The last ``frames`` frames written (the phone had not played them: the clear drops them there), oldest
        first, as (seq, samples); they no longer count as written."""
        back: list[tuple[int, np.ndarray]] = []
        for _ in range(min(frames, len(self.recent))):
            seq, s, samples = self.recent.pop()
            self.written[s] -= len(samples)
            back.append((seq, samples))
        back.reverse()
        return back

    def heard(self, rate: int) -> dict[str, str]:
        """The PLAYBACK_CLEARED attributes (a contract: the agent's history and the ClickHouse transcript read them):

        - ``sentences_heard``: sentences played to their end (whole: a later sentence began, or the reply's END came);
        - ``cut_sentence``: the sentence playing when cut (its index in the reply, from 0), "" between sentences;
        - ``cut_fraction``: how much of that sentence's audio received so far had played, "0.00"-"1.00"
          ("0.00" when ``cut_sentence`` is "");
        - ``heard_ms``: the reply's audio played, in ms.
        """
        order = sorted(set(self.received) | set(self.written))
        heard = 0
        cut: int | None = None
        for i, s in enumerate(order):
            got, played = self.received.get(s, 0), self.written.get(s, 0)
            whole = self.ended or i + 1 < len(order)
            if (whole and played >= got) or s in self.echoed:
                heard += 1
                continue
            if played > 0:
                cut = s
            break
        fraction = 0.0
        if cut is not None:
            fraction = min(1.0, self.written.get(cut, 0) / max(1, self.received.get(cut, 0)))
        return {
            "sentences_heard": str(heard),
            "cut_sentence": "" if cut is None else str(cut),
            "cut_fraction": f"{fraction:.2f}",
            "heard_ms": str(sum(self.written.values()) * 1000 // rate),
        }


@dataclass(frozen=True, slots=True)
class HoldPolicy:
    """How the ingress treats a pause command (IngressSettings, README "Interruptions")."""

    grace_s: float = 3.0  # a held reply with no resume or clear this long plays on by itself
    end_guard_s: float = 0.5  # a reply whose END came and with less than this left to play is not paused

    @classmethod
    def from_settings(cls, settings: Any) -> HoldPolicy:
        d = cls()
        return cls(
            getattr(settings, "barge_in_pause_grace_ms", d.grace_s * 1000) / 1000,
            getattr(settings, "barge_in_end_guard_ms", d.end_guard_s * 1000) / 1000,
        )


@dataclass(slots=True)
class Hold:
    """A reply held by a pause: until a resume, a clear or ``until`` (then it plays on by itself)."""

    turn_seq: int
    until: float  # monotonic
    speech_onset_us: int
    reaction_s: float = 0.0  # speech onset → the socket's clear: the barge-in reaction the caller heard
