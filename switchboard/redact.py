"""PII redaction for transcripts, summaries and log lines, before anything is stored or published.

It lives in the shared core so that the STT processor can redact transcripts before they reach
the bus (``SWITCHBOARD_REDACT_TRANSCRIPTS``), the sink before they reach ClickHouse, and every
service its logs, without one layer importing another.

Kinds: card numbers (13–19 digits passing the Luhn check, or any 13–19 digits after a word such
as "card" or "visa": one misheard digit must not leak the rest), US social security
numbers, phone numbers, e-mail addresses and dates of birth — written with
digits or spoken as words the way Whisper transcribes them ("four one one one
…", "double five", "john dot smith at gmail dot com", "March fifteenth,
nineteen eighty five"). Each match is replaced by a tag such as ``[CARD]``.

The rules lean towards over-redaction: a 10-digit order number is taken for a
phone number, and any full date at least ``dob_min_years`` years in the past is
taken for a date of birth (there are no appointments in the past decade).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass, field

from switchboard.numbers import NUMBER_WORDS, ORDINALS, TEENS, TENS, UNITS, Run, find_runs, luhn_ok, words_to_int

CARD, SSN, PHONE, EMAIL, DOB = "card", "ssn", "phone", "email", "dob"
ALL_KINDS: frozenset[str] = frozenset({CARD, SSN, PHONE, EMAIL, DOB})
TAGS = {CARD: "[CARD]", SSN: "[SSN]", PHONE: "[PHONE]", EMAIL: "[EMAIL]", DOB: "[DOB]"}

SSN_CONTEXT = re.compile(r"\b(social|ssn|security)\b", re.I)
# A card number said with one digit misheard fails the Luhn check but is still the caller's card:
# near these words any 13-19 digit run is taken for a card.
CARD_CONTEXT = re.compile(r"\b(card|visa|mastercard|amex|credit|debit)\b", re.I)
PHONE_CONTEXT = re.compile(r"\b(phone|number|call|reach|cell|mobile|contact|text)\b", re.I)
BIRTH_CONTEXT = re.compile(r"\b(born|birth|dob|d\.o\.b|birthday)\b", re.I)

TLD_WORDS = ("com", "net", "org", "edu", "gov", "io", "co", "uk", "us", "ca", "de", "fr", "info", "biz", "me")
TLDS = "(?:" + "|".join(TLD_WORDS) + ")"
_SEP = r"\s*(?:\.|\bdot\b|_|\bunderscore\b|-|\bdash\b)\s*"
EMAIL_WRITTEN = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
EMAIL_SPOKEN = re.compile(
    rf"\b[a-z0-9]+(?:{_SEP}[a-z0-9]+)*\s*(?:@|\bat\b)\s*[a-z0-9-]+(?:{_SEP}[a-z0-9-]+)*?(?:\s*(?:\.|\bdot\b)\s*){TLDS}\b(?:(?:\s*(?:\.|\bdot\b)\s*){TLDS}\b)?",
    re.I,
)

MONTHS = {m: i + 1 for i, m in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
     "december"))}
_MONTH = ("(?:" + "|".join(sorted(MONTHS, key=len, reverse=True))
          + r"|(?:jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?)")
_ORD_WORD = (
    r"(?:(?:twenty|thirty)[\s-]+(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)|"
    + "|".join(sorted(ORDINALS, key=len, reverse=True))
    + r"|(?:twenty|thirty)[\s-]+(?:one|two|three|four|five|six|seven|eight|nine)|"
    + "|".join(sorted(set(UNITS) - {"oh", "zero"} | set(TEENS) | {"twenty", "thirty"}, key=len, reverse=True))
    + ")"
)
_DAY = rf"(?:\d{{1,2}}(?:st|nd|rd|th)?|{_ORD_WORD})"
_NUMW = "|".join(sorted(set(UNITS) | set(TEENS) | set(TENS), key=len, reverse=True))
_YEAR_WORDS = rf"(?:(?:{_NUMW}|thousand|hundred|and)(?:[\s-]+(?:{_NUMW}|thousand|hundred|and))*)"
_YEAR = rf"(?:\d{{4}}|'\d{{2}}|{_YEAR_WORDS})"
DATE_PATTERNS = (
    # March 15th, 1985 / March fifteenth nineteen eighty five / March 15
    re.compile(rf"\b(?P<month>{_MONTH})\s+(?:the\s+)?(?P<day>{_DAY})\b(?:,?\s*(?:of\s+)?(?P<year>{_YEAR})\b)?", re.I),
    # the 15th of March, 1985 / fifteenth of March nineteen eighty five
    re.compile(rf"\b(?:the\s+)?(?P<day>{_DAY})\s+(?:of\s+)?(?P<month>{_MONTH})\b(?:,?\s*(?P<year>{_YEAR})\b)?", re.I),
    # 03/15/1985, 15.03.85, 3-15-1985
    re.compile(r"\b(?P<a>\d{1,2})[/.-](?P<b>\d{1,2})[/.-](?P<year>\d{4}|\d{2})\b"),
    # 1985-03-15
    re.compile(r"\b(?P<year>\d{4})-(?P<a>\d{1,2})-(?P<b>\d{1,2})\b"),
)

WORD = re.compile(r"[a-z]+")
DIGIT = re.compile(r"\d")
DATE_HINT = re.compile(r"\d[/.-]\d")
MONTH_WORDS = frozenset(MONTHS) | {"jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"}
ORDINAL_WORDS = frozenset(ORDINALS)
TLDS_SPOKEN = frozenset(TLD_WORDS)  # "dot com": a spoken address always ends in one of these words

# The screens look at a text's words as ASCII bytes: for an ASCII text C finds them (and counts
# the digits) several times faster than the regular expressions; ``_words`` says how.
_LETTERS_ONLY = bytes(c if 97 <= c <= 122 else 32 for c in range(256))
_ASCII_DIGITS = b"0123456789"
_NUMBER_TOKENS = frozenset(w.encode() for w in NUMBER_WORDS)
_ORDINAL_TOKENS = frozenset(w.encode() for w in ORDINAL_WORDS)
_MONTH_TOKENS = frozenset(w.encode() for w in MONTH_WORDS)
_TLD_TOKENS = frozenset(w.encode() for w in TLDS_SPOKEN)


def _words(text: str) -> tuple[list[bytes], int]:
    """The runs of letters a-z of the lowercased text, and how many digits it holds: what ``WORD``
    and ``DIGIT`` find. A text that is not ASCII is left to them (its digits may be of any script)."""
    raw = text.lower().encode()
    if raw.isascii():
        return raw.translate(_LETTERS_ONLY).split(), len(raw) - len(raw.translate(None, _ASCII_DIGITS))
    return [w.encode() for w in WORD.findall(text.lower())], len(DIGIT.findall(text))


@dataclass(slots=True)
class Redacted:
    text: str
    kinds: list[str] = field(default_factory=list)  # what was found, in order


@dataclass(slots=True)
class Redactor:
    """Finds and masks PII; ``kinds`` chooses which (see ``ALL_KINDS``)."""

    kinds: frozenset[str] = ALL_KINDS
    dob_min_years: int = 10
    today: dt.date | None = None

    def redact(self, text: str) -> Redacted:
        if not text or not self.kinds:
            return Redacted(text or "")
        found: list[tuple[int, int, str]] = []
        # Cheap screens first: most sentences hold no number, no "@"/"at" and no month, and the sink
        # redacts every transcript row, so the full passes run only where they can find something.
        tokens, digits = _words(text)
        number_words = 0 if _NUMBER_TOKENS.isdisjoint(tokens) else sum(1 for t in tokens if t in _NUMBER_TOKENS)
        if EMAIL in self.kinds and ("@" in text or (b"at" in tokens and not _TLD_TOKENS.isdisjoint(tokens))):
            found += [(m.start(), m.end(), EMAIL) for m in EMAIL_WRITTEN.finditer(text)]
            found += [(m.start(), m.end(), EMAIL) for m in EMAIL_SPOKEN.finditer(text)]
        if DOB in self.kinds and (digits or number_words or not _ORDINAL_TOKENS.isdisjoint(tokens)) and (
            not _MONTH_TOKENS.isdisjoint(tokens) or DATE_HINT.search(text)
        ):
            found += self._dates(text)
        # a run needs 7+ digits; a number word stands for at most 3 ("double five", "twenty", "hundred")
        if self.kinds & {CARD, SSN, PHONE} and digits + 3 * number_words >= 7:
            for run in find_runs(text, words=number_words > 0):
                found += self._numbers(text, run)
        if not found:
            return Redacted(text)
        return self._apply(text, found)

    def __call__(self, text: str) -> str:
        return self.redact(text).text

    # -- numbers -----------------------------------------------------------
    def _numbers(self, text: str, run: Run) -> list[tuple[int, int, str]]:
        if len(run.digits) < 7:
            return []
        kind = self._classify(text, run)
        if kind:
            return [(run.start, run.end, kind)]
        # A run can hold two numbers ("card 4111 …, expiry 12 27"): try group-aligned slices, longest first.
        pieces = run.pieces
        starts = [i for i, p in enumerate(pieces) if p.new_group or i == 0]
        ends = [*starts[1:], len(pieces)]
        out: list[tuple[int, int, str]] = []
        taken_until = 0
        for length in range(len(starts) - 1, 0, -1):
            for a in range(len(starts) - length + 1):
                i, j = starts[a], ends[a + length - 1]
                if pieces[i].start < taken_until or any(s <= pieces[i].start < e for s, e, _ in out):
                    continue
                sub = run.sub(i, j)
                if len(sub.digits) >= 7 and (kind := self._classify(text, sub)):
                    out.append((sub.start, sub.end, kind))
                    taken_until = max(taken_until, sub.end)
        return out

    def _classify(self, text: str, run: Run) -> str | None:
        d = run.digits
        before = text[max(0, run.start - 60):run.start]
        if CARD in self.kinds and 13 <= len(d) <= 19 and (luhn_ok(d) or CARD_CONTEXT.search(before)):
            return CARD
        if SSN in self.kinds and len(d) == 9:
            if SSN_CONTEXT.search(before):
                return SSN
            if run.groups() == [3, 2, 4] and d[:3] not in ("000", "666") and d[0] != "9" and d[3:5] != "00":
                return SSN
        if PHONE in self.kinds:
            if run.plus and 8 <= len(d) <= 15:
                return PHONE
            if len(d) == 10 or (len(d) == 11 and d[0] in "01"):
                return PHONE
            if len(d) == 7 and PHONE_CONTEXT.search(before):
                return PHONE
        return None

    # -- dates of birth ----------------------------------------------------
    def _dates(self, text: str) -> list[tuple[int, int, str]]:
        out = []
        today = self.today or dt.date.today()
        for pattern in DATE_PATTERNS:
            for m in pattern.finditer(text):
                year = _year(m.group("year"), today) if m.group("year") else None
                groups = m.groupdict()
                if "month" in groups and _day(groups["day"]) is None:
                    continue
                if "a" in groups and not _plausible_numeric(int(groups["a"]), int(groups["b"])):
                    continue
                keyword = BIRTH_CONTEXT.search(text[max(0, m.start() - 60):m.start()])
                old = year is not None and year <= today.year - self.dob_min_years and year >= 1900
                if keyword or old:
                    end = m.end() if year is not None or m.group("year") is None else m.start("year")
                    out.append((m.start(), end, DOB))
        return out

    def _apply(self, text: str, found: list[tuple[int, int, str]]) -> Redacted:
        found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
        parts: list[str] = []
        kinds: list[str] = []
        pos = 0
        for start, end, kind in found:
            if start < pos:  # overlaps an earlier, longer match
                continue
            parts += [text[pos:start], TAGS[kind]]
            kinds.append(kind)
            pos = end
        parts.append(text[pos:])
        return Redacted("".join(parts), kinds)


def _day(s: str) -> int | None:
    s = s.lower().strip()
    num = re.match(r"\d{1,2}", s)
    v = int(num.group()) if num else words_to_int(re.split(r"[\s-]+", s))
    return v if v is not None and 1 <= v <= 31 else None


def _year(s: str, today: dt.date) -> int | None:
    s = s.strip().lower()
    if s.startswith("'"):
        s = s[1:]
    if s.isdigit():
        y = int(s)
        if len(s) == 2:
            y += 2000 if y <= today.year % 100 else 1900
        return y
    words = re.split(r"[\s-]+", s)
    y = words_to_int(words)
    return y if y is not None and 1900 <= y <= 2100 else None


def _plausible_numeric(a: int, b: int) -> bool:
    return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)


def mask_caller(number: str | None) -> str:
    """A caller number reduced to its last four digits, enough for an agent to recognise, useless to a thief."""
    digits = re.sub(r"\D", "", number or "")
    return f"***{digits[-4:]}" if len(digits) >= 4 else ""


def caller_hash(number: str | None, key: str) -> str:
    """A keyed hash (HMAC-SHA256) of the caller's digits: counts repeat callers without storing the
    number. Keyed, because a plain or publicly salted hash of a phone number is reversed by trying
    the few billion numbers there are; only whoever holds the key can do that."""
    digits = re.sub(r"\D", "", number or "")
    return hmac.new(key.encode(), digits.encode(), hashlib.sha256).hexdigest()[:16] if digits else ""


class RedactingFilter(logging.Filter):
    """Masks PII in log messages and their structured fields before any handler writes them."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = self.redactor(msg)
        if red != msg:
            record.msg, record.args = red, None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: self.redactor(v) if isinstance(v, str) else v for k, v in fields.items()}
        return True


def install_log_redaction(redactor: Redactor) -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(redactor))




# -- the caller's number on the bus ---------------------------------------------------------------
CALLER_NUMBER_MODES = ("masked", "hashed", "clear")
_process_key: str | None = None


def caller_hash_key(configured: str) -> str:
    """The configured key, or else one random key for this process's life (warned once): hashes
    then still count repeat callers within the process, but not across restarts or nodes."""
    global _process_key
    if configured:
        return configured
    if _process_key is None:
        _process_key = secrets.token_urlsafe(32)
        logging.getLogger(__name__).warning(
            "no SWITCHBOARD_CALLER_HASH_KEY: caller hashes use a random key and change at every restart")
    return _process_key


def published_caller(number: str | None, mode: str, key: str) -> tuple[str | None, dict[str, str]]:
    """What a call event publishes of the caller's number: the ``caller_number`` field and the
    attributes to add. ``masked``: the last four digits, ``hashed``: nothing, ``clear``: the number;
    every mode adds ``caller_hash``, the keyed hash the analysts count repeat callers with."""
    if mode not in CALLER_NUMBER_MODES:
        raise ValueError(f"caller number mode {mode!r}: choose from {CALLER_NUMBER_MODES}")
    if not number:
        return number, {}
    attrs = {"caller_hash": caller_hash(number, key)} if re.search(r"\d", number) else {}
    shown = {"masked": mask_caller(number) or None, "hashed": None, "clear": number}[mode]
    return shown, attrs


# -- phone numbers in log lines -------------------------------------------------------------------
# Cheaper and narrower than the Redactor: log lines are full of IDs, offsets and timestamps, so only
# what is written like a phone number is masked: "+15550100123", "%2B1555…", "(555) 010-0123",
# "555-010-0123". Values of fields named like a number (caller, phone, from, to) are masked whatever
# their form.
LOG_PHONE = re.compile(
    r"(?<![\w%+])(?:(?:\+|%2[Bb])\d(?:[ .()-]?\d){6,14}"
    r"|\(\d{3}\)\s?\d{3}[-. ]\d{4}"
    r"|\d{3}[-. ]\d{3}[-. ]\d{4})(?!\w)"
)
PHONE_FIELD = re.compile(r"caller|phone|^from$|^to$|msisdn", re.I)


def mask_phones(text: str) -> str:
    """Phone numbers written in ``text`` reduced to their last four digits (``***0123``)."""
    if not any(c.isdigit() for c in text):
        return text
    return LOG_PHONE.sub(lambda m: mask_caller(m.group().replace("%2B", "+").replace("%2b", "+")) or "***", text)


def mask_log_field(name: str, value: object) -> object:
    if not isinstance(value, str):
        return value
    if PHONE_FIELD.search(name) and any(c.isdigit() for c in value):
        return mask_caller(value) or "***"
    return mask_phones(value)
