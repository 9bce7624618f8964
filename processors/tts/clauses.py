"""Where to cut a sentence so its first clause can be synthesised, and heard, alone.

Piper makes a sentence whole before any of it plays, and the time that takes grows with the
sentence (~45 ms per second of speech on this box, more under load). Synthesising a short first
clause first and the rest while it plays puts the first audio of any sentence within the
latency budget (DESIGN.md: ≤ 150 ms). This module is the pure text side of that: no model.

The cut, in order of preference:

1. after the first clause boundary (comma, semicolon, colon, dash, or the end of an inner
   sentence) if the first clause has at most ``max_first_words`` words. The voice keeps its own
   pause there, so the join sounds like the whole sentence;
2. otherwise between two words, after at most ``max_first_words - 1`` words, preferring the start
   of a phrase (before "at", "for", "and", ...) and never leaving a function word ("the", "at",
   "my") at the end of the first part, so the seam falls where a speaker may breathe.

Never inside a number ("3,000", "3:30", "1.5"), never between a number and what follows it
("3:30 | pm", "10 | AM", "20 | percent"), never after an abbreviation ("Dr. | Smith",
"a.m."). A sentence of at most ``keep_whole_words`` words stays whole (it is quick to make
whole, and a seam in it would cost more than it saves), unless its first clause is a phrase the
caller's ``cached`` predicate knows (a cached "Sure," plays at once). Words are counted by
spaces, so a language written without them (Chinese, Japanese) is never cut.

Figures behind the defaults (joe-medium, length scale 1): a sentence lasts ~0.28 s per word
plus ~0.16 s, so a first clause of up to 5 words lasts ≤ ~1.5 s including its pause; a sentence
of up to 6 words (~1.8 s) is made whole in ≤ ~90 ms on an idle core.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_FIRST_WORDS = 5
KEEP_WHOLE_WORDS = 6

# Punctuation that ends a clause when it ends a word: the voice pauses there.
_CLAUSE_END = re.compile(r"[,;:!?.。，、；：！？]$")
_DASHES = {"-", "–", "—", "--"}


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


_ABBREVIATIONS = _wordset(
    # English, then a few common in Spanish, French, German, Italian and Portuguese text
    "mr mrs ms dr st jr sr prof vs etc approx dept appt nr tel ave inc ltd co mt ft"
    " sra srta dra dres ud uds mme mlle bzw ca dt hr fr sig dott"
)
# Words that open a phrase: a seam just before one of them falls where a speaker may pause.
_PHRASE_STARTS = _wordset(
    "at on in for to from with by about after before until because so and or but if when while which who"
    " that than as"
)
# Words that lean on the next one: a first part must not end with one of them.
_JOINERS = _wordset(
    # English
    "a an the to of for at on in by with from about into onto over under and or but nor so if as than that"
    " my your his her its our their this these those i i'll i'd i'm i've we we'll you you'll it's is are was"
    " were be been am will would could should can may might must do does did not no very just your you're"
    # Spanish, French, German, Italian, Portuguese articles, prepositions and conjunctions
    " el la los las un una unos unas de del al y o que en por para con su sus mi mis le les"
    " du des et ou à au aux pour avec sur dans ce cette mon ma mes ton ta son sa"
    " der die das den dem des ein eine einen einem und oder zu zum zur mit von für im am"
    " il lo gli di da e per con nel nella o os as um uma do da no na em com"
)
_DIGIT = re.compile(r"\d")
_ATTACHED_DASH = re.compile(r"(?<=[^\W\d_])\s*([—–])\s*(?=[^\W\d_])")
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+", re.UNICODE)  # "a.m.", "U.S.", "M."


@dataclass(frozen=True)
class Split:
    first: str
    rest: str
    at_pause: bool  # cut at punctuation (the voice pauses there) rather than between two words


def _word(token: str) -> str:
    return token.strip("\"'“”‘’()[]¿¡«»").lower().replace("’", "'")


def _is_word(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


def _spoken_words(token: str) -> int:
    """Roughly how many words ``token`` is said as: a number is said in two or more ("3,000", "3:30")."""
    return 2 if _DIGIT.search(token) else int(_is_word(token))


def _abbreviation(token: str) -> bool:
    core = token.strip("\"'“”‘’()[]¿¡«»")
    if not core.endswith("."):
        return False
    return bool(_INITIALS.fullmatch(core)) or core[:-1].lower() in _ABBREVIATIONS


def _clause_end(token: str, following: str | None) -> bool:
    """True when the voice pauses after ``token``: it ends in clause punctuation (an abbreviation's
    period or a number's decimal point does not count), or the next token is a dash."""
    if following in _DASHES:
        return True
    core = token.rstrip("\"'”’)»")
    if not _CLAUSE_END.search(core):
        return False
    # "Dr.", "a.m." or the "5." of a list end no clause we can trust
    return not (core.endswith(".") and (_abbreviation(token) or bool(_DIGIT.search(core[-2:-1]))))


def _may_cut_between(before: str, after: str) -> bool:
    if _DIGIT.search(before):  # "3:30 | pm", "10 | AM", "$20 | dollars", "2 | people"
        return False
    if _abbreviation(before):  # "Dr. | Smith", "e.g. | Monday"
        return False
    return _word(before) not in _JOINERS and after not in _DASHES and _is_word(after)


def split_first_clause(
    text: str,
    *,
    max_first_words: int = MAX_FIRST_WORDS,
    keep_whole_words: int = KEEP_WHOLE_WORDS,
    cached: Callable[[str], bool] | None = None,
) -> Split | None:
    """The first part of ``text`` to synthesise alone and the rest, or None to keep it whole."""
    # a dash between words stands alone ("Right—let me" → "Right — let me"); not in a range ("9–5")
    tokens = _ATTACHED_DASH.sub(r" \1 ", text).split()
    words = [i for i, t in enumerate(tokens) if _is_word(t)]
    if len(words) < 2:
        return None

    def cut(k: int, at_pause: bool) -> Split | None:
        first, rest = " ".join(tokens[:k]), " ".join(tokens[k:])
        if rest in _DASHES or not any(_is_word(t) for t in tokens[k:]):
            return None
        if rest.split(maxsplit=1)[0] in _DASHES:  # "Right — let me check": the dash goes with the pause
            rest = rest.split(maxsplit=1)[1] if len(rest.split(maxsplit=1)) > 1 else ""
            first = f"{first} —"
        return Split(first, rest, at_pause) if rest else None

    # 1. the first clause boundary, within reach
    counted = 0
    for k, token in enumerate(tokens, start=1):
        counted += _spoken_words(token)
        if counted > max_first_words:
            break
        following = tokens[k] if k < len(tokens) else None
        if following is not None and _clause_end(token, following):
            split = cut(k, True)
            if split is None:
                break
            if cached is not None and cached(split.first):
                return split  # a cached opener plays at once, however short the sentence
            if len(words) <= keep_whole_words:
                return None
            return split
    if len(words) <= keep_whole_words:
        return None

    # 2. between two words: the latest phrase start within reach, else the latest allowed seam
    reach = min(max_first_words - 1, len(tokens) - 1)
    allowed = [k for k in range(2, reach + 1) if _may_cut_between(tokens[k - 1], tokens[k])]
    if not allowed:
        return None
    starts = [k for k in allowed if _word(tokens[k]) in _PHRASE_STARTS]
    return cut(starts[-1] if starts else allowed[-1], False)
