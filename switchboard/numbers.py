"""Number runs in transcripts, as people say them and as Whisper writes them.

A *run* is a stretch of digits and number words joined by spaces or the
separators people use when reading numbers out ("4111-1111", "one two three,
four five", "five five five dash one two three four", "double five", "oh").
Each run becomes a digit string plus its groups (where the speaker paused or
wrote a separator), which is what the card / SSN / phone detectors look at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {"zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
         "nine": 9}
TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
         "seventeen": 17, "eighteen": 18, "nineteen": 19}
TENS = {"twenty": 2, "thirty": 3, "forty": 4, "fifty": 5, "sixty": 6, "seventy": 7, "eighty": 8, "ninety": 9}
MULTIPLIERS = {"double": 2, "triple": 3}
# Separators that keep a run going but mark a group boundary.
GROUP_JOINERS = {"-", ",", ".", "/", "(", ")", "dash", "hyphen"}
NUMBER_WORDS = set(UNITS) | set(TEENS) | set(TENS) | set(MULTIPLIERS) | {"hundred"}
RUN_WORDS = frozenset(NUMBER_WORDS | GROUP_JOINERS)  # the words a run can hold
RUN_START = re.compile(r"[\d+(]")  # where a run of written digits can begin

TOKEN = re.compile(r"(?P<w>[A-Za-z]+)|(?P<d>\d+)|(?P<p>[^\sA-Za-z\d])")


@dataclass(slots=True)
class Piece:
    """One numeric token of a run: where it is, and the digits it stands for."""

    start: int
    end: int
    digits: str
    new_group: bool  # a separator or a written digit group starts here


@dataclass(slots=True)
class Run:
    pieces: list[Piece]
    plus: bool  # written with a leading "+" (international phone number)

    @property
    def start(self) -> int:
        return self.pieces[0].start

    @property
    def end(self) -> int:
        return self.pieces[-1].end

    @property
    def digits(self) -> str:
        return "".join(p.digits for p in self.pieces)

    def groups(self) -> list[int]:
        sizes: list[int] = []
        for p in self.pieces:
            if p.new_group or not sizes:
                sizes.append(len(p.digits))
            else:
                sizes[-1] += len(p.digits)
        return sizes

    def sub(self, i: int, j: int) -> Run:
        return Run(self.pieces[i:j], self.plus and i == 0)


def find_runs(text: str, words: bool = True) -> list[Run]:
    """Every run of spoken or written digits in ``text``, in order. ``words=False`` says the text
    holds no number word (the caller counted them), so runs start at a digit, "+" or "(" and the
    words before the first of these need not be looked at."""
    runs: list[Run] = []
    pieces: list[Piece] = []
    plus = False
    boundary = True  # the next numeric token starts a new group
    multiplier = 1
    tens_piece: Piece | None = None  # "twenty" waiting for a unit ("twenty five" → 25)
    lead: int | None = None  # where a run's "(", "+" or "double" began, so the mask covers it

    def close() -> None:
        nonlocal pieces, plus, boundary, multiplier, tens_piece, lead
        if pieces:
            if lead is not None:
                pieces[0].start = lead
            runs.append(Run(pieces, plus))
        pieces, plus, boundary, multiplier, tens_piece, lead = [], False, True, 1, None, None

    start = 0
    if not words:
        first = RUN_START.search(text)
        if first is None:
            return runs
        start = first.start()
    for m in TOKEN.finditer(text, start):
        kind, token = m.lastgroup, m.group()
        if kind == "d":
            pieces.append(Piece(m.start(), m.end(), token, True))
            boundary, tens_piece = True, None
            continue
        low, punct = (token.lower(), None) if kind == "w" else ("", token)
        if low and low not in RUN_WORDS:
            # most words of a sentence: they end any run (close() with no run open changes nothing)
            if pieces or plus or lead is not None or multiplier != 1:
                close()
            continue
        if low in UNITS and not (low == "oh" and not pieces and _next_is_punct(text, m.end())):
            d = UNITS[low]
            if tens_piece is not None and d != 0 and low != "oh":
                tens_piece.digits = tens_piece.digits[0] + str(d)
                tens_piece.end = m.end()
                tens_piece = None
            else:
                pieces.append(Piece(m.start(), m.end(), str(d) * multiplier, boundary))
                tens_piece = None
            multiplier, boundary = 1, False
        elif low in TEENS:
            pieces.append(Piece(m.start(), m.end(), str(TEENS[low]), boundary))
            multiplier, boundary, tens_piece = 1, False, None
        elif low in TENS:
            tens_piece = Piece(m.start(), m.end(), f"{TENS[low]}0", boundary)
            pieces.append(tens_piece)
            multiplier, boundary = 1, False
        elif low in MULTIPLIERS:
            multiplier = MULTIPLIERS[low]
            if not pieces and lead is None:
                lead = m.start()
        elif low == "hundred" and pieces:
            pieces[-1].digits += "00"
            pieces[-1].end = m.end()
            tens_piece = None
        elif punct in ("+", "(") and not pieces:
            plus = plus or punct == "+"
            lead = m.start() if lead is None else lead
        elif (punct in GROUP_JOINERS or low in GROUP_JOINERS) and pieces:
            boundary, tens_piece = True, None
        else:
            close()
    close()
    return runs


def _next_is_punct(text: str, pos: int) -> bool:
    """"Oh, ..." opening a sentence is an interjection, not a zero."""
    rest = text[pos:].lstrip()
    return not rest or rest[0] in ",.!?"


_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # a digit doubled, its two digits summed


def luhn_ok(digits: str) -> bool:
    """The card check digit: from the right, every second digit doubled (digit sum), all summed.
    On the ASCII codes, summed in C: each digit counts its code minus 48."""
    if not digits.isascii():  # digits of another script (r"\d" matches them): their values, in ASCII
        digits = "".join(str(int(c)) for c in digits)
    backwards = digits[::-1].encode()
    kept, doubled = backwards[::2], backwards[1::2].translate(_DOUBLED)
    return (sum(kept) + sum(doubled) - 48 * len(backwards)) % 10 == 0


def words_to_int(words: list[str]) -> int | None:
    """A small cardinal parser for years and days: "nineteen eighty five" → 1985,
    "two thousand and one" → 2001, "twenty oh five" → 2005, "thirty first" → 31."""
    words = [w for w in words if w not in ("and", "")]
    if not words:
        return None
    if "thousand" in words:
        i = words.index("thousand")
        head, tail = words_to_int(words[:i]) or 1, words_to_int(words[i + 1:]) if words[i + 1:] else 0
        return None if tail is None else head * 1000 + tail
    if len(words) >= 2 and words[0] in TEENS | TENS and words[1] not in UNITS:
        # "nineteen eighty five", "twenty twenty": two two-digit halves
        hi, lo = words_to_int(words[:1]), words_to_int(words[1:])
        return None if hi is None or lo is None or lo >= 100 else hi * 100 + lo
    if len(words) >= 2 and words[0] in TEENS | TENS and words[1] in ("oh", "o") and len(words) == 3:
        hi, lo = words_to_int(words[:1]), UNITS.get(words[2])
        return None if hi is None or lo is None else hi * 100 + lo
    if len(words) == 1:
        w = words[0]
        for table in (UNITS, TEENS):
            if w in table:
                return table[w]
        if w in TENS:
            return TENS[w] * 10
        return ORDINALS.get(w)
    if len(words) == 2 and words[0] in TENS:
        unit = UNITS.get(words[1], ORDINALS.get(words[1]))
        if unit is not None and unit < 10:
            return TENS[words[0]] * 10 + unit
    return None


ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
            "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
            "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
            "twentieth": 20, "thirtieth": 30}
