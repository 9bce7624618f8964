"""PII redaction on realistic call transcripts, written with digits and spoken as Whisper writes words."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import switchboard.redact as redact_module
from sinks.settings import SinkSettings
from switchboard.logs import JsonFormatter
from switchboard.numbers import find_runs, luhn_ok
from switchboard.redact import (
    ALL_KINDS,
    CARD,
    DIGIT,
    DOB,
    EMAIL,
    PHONE,
    SSN,
    WORD,
    Redactor,
    _words,
    caller_hash,
    caller_hash_key,
    mask_caller,
    mask_log_field,
    mask_phones,
    published_caller,
)

TODAY = dt.date(2026, 11, 21)


@pytest.fixture
def redact() -> Redactor:
    return Redactor(today=TODAY)


CASES = [
    # (kind, transcript, redacted)
    (CARD, "Sure, my card number is 4111 1111 1111 1111.", "Sure, my card number is [CARD]."),
    (CARD, "It's 4111-1111-1111-1111, expiry twelve twenty seven.", "It's [CARD], expiry twelve twenty seven."),
    (CARD, "Yeah it's four one one one, one one one one, one one one one, one one one one.", "Yeah it's [CARD]."),
    (CARD, "The Amex is 3782 822463 10005 if that helps", "The Amex is [CARD] if that helps"),
    (CARD, "Card is 5500 0000 0000 0004 and the expiry is 12 27.", "Card is [CARD] and the expiry is 12 27."),
    # one digit misheard breaks the Luhn check; after "card" the run is still the caller's card
    (CARD, "My card is 4505,55,671,234,5678.", "My card is [CARD]."),
    (CARD, "Card 4111 1111 1111 1112 is what the letter says", "Card [CARD] is what the letter says"),
    (CARD, "رقم البطاقة ٤١١١ ١١١١ ١١١١ ١١١١", "رقم البطاقة [CARD]"),  # digits of another script
    (SSN, "My social is 123-45-6789.", "My social is [SSN]."),
    (SSN, "Social security number, one two three, four five, six seven eight nine.",
     "Social security number, [SSN]."),
    (SSN, "my SSN is 078051120", "my SSN is [SSN]"),
    (PHONE, "You can reach me at (415) 555-2671 after five.", "You can reach me at [PHONE] after five."),
    (PHONE, "Call me back on five five five, one two three, four five six seven.", "Call me back on [PHONE]."),
    (PHONE, "My number is four one five, five five five, two six seven oh.", "My number is [PHONE]."),
    (PHONE, "My cell is double five five, one two three, four five six seven.", "My cell is [PHONE]."),
    (PHONE, "I'm on +44 20 7946 0958 while I'm in London.", "I'm on [PHONE] while I'm in London."),
    (PHONE, "It's 1-800-555-0199.", "It's [PHONE]."),
    (EMAIL, "My email is jane.doe@example.com, thanks.", "My email is [EMAIL], thanks."),
    (EMAIL, "It's john dot smith at gmail dot com.", "It's [EMAIL]."),
    (EMAIL, "Send it to j underscore doe at yahoo dot co dot uk please", "Send it to [EMAIL] please"),
    (DOB, "I was born on March 15th, 1985.", "I was born on [DOB]."),
    (DOB, "My date of birth is March fifteenth, nineteen eighty five.", "My date of birth is [DOB]."),
    (DOB, "Date of birth the third of July two thousand and one.", "Date of birth [DOB]."),
    (DOB, "DOB 03/15/1985", "DOB [DOB]"),
    (DOB, "My birthday is 7/4/90, by the way.", "My birthday is [DOB], by the way."),
    (DOB, "It's 1979-02-28.", "It's [DOB]."),
]


@pytest.mark.parametrize(("kind", "text", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_pii_kind_is_masked_in_digits_and_in_words(redact: Redactor, kind: str, text: str, expected: str) -> None:
    out = redact.redact(text)
    assert out.text == expected
    assert out.kinds == [kind]


@pytest.mark.parametrize(("digits", "valid"), [
    ("4111111111111111", True), ("4111111111111112", False), ("378282246310005", True), ("79927398713", True),
    ("79927398710", False), ("0", True), ("18", True), ("٤١١١١١١١١١١١١١١١", True), ("٤١١١١١١١١١١١١١١٢", False),
])
def test_the_luhn_check_accepts_exactly_the_numbers_whose_check_digit_is_right(digits: str, valid: bool) -> None:
    assert luhn_ok(digits) is valid


@pytest.mark.parametrize("text", [
    "Can I book Tuesday at 3 PM?",
    "I'd like an appointment on March 3rd 2027, in the morning.",
    "Oh, I need to cancel my appointment for Friday at 10.",
    "I have 3 kids and my order number is 12345.",
    "Is the clinic at 221 Baker Street open on Saturday?",
    "Reference 4111 1111 1111 1112 is what the letter says",  # fails the Luhn check, and no card is named
    "I'll meet you at noon dot",
])
def test_ordinary_call_center_speech_is_left_alone(redact: Redactor, text: str) -> None:
    assert redact(text) == text


PLAIN = [
    "Hi, I'd like to book an appointment please.", "Yes, that's right.", "Would you like me to call us back?",
    "We're at the clinic, the one on Main Street.", "Ten in the morning would be great.", "Oh, twenty past two?",
    "(That was the first time.)", "+ and - are on the keypad", "Je vous écris à propos de mon rendez-vous.",
    "It's at example dot com I think", "My number is ٤١٥٥٥٥٢٦٧١",
]


@pytest.mark.parametrize("text", [c[1] for c in CASES] + PLAIN + ["K is Kelvin", "İstanbul, ONE TWO"])
def test_the_cheap_screens_see_what_the_full_passes_see(
    redact: Redactor, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the words and digits found on bytes are those the regular expressions find
    assert _words(text) == ([w.encode() for w in WORD.findall(text.lower())], len(DIGIT.findall(text)))
    # and runs looked for from the first digit only are all the runs, when there is no number word
    screened = redact.redact(text)
    monkeypatch.setattr(redact_module, "find_runs", lambda text, words=True: find_runs(text))
    assert redact.redact(text) == screened


def test_a_whole_transcript_loses_every_kind_at_once(redact: Redactor) -> None:
    text = ("Hi, this is Jane. I was born on the fourth of July nineteen ninety. My card is four one one one one one "
            "one one one one one one one one one one and my email is jane dot doe at example dot com. You can call "
            "me on 415 555 2671. Oh and my social is 123 45 6789.")
    out = redact.redact(text)
    assert out.text == ("Hi, this is Jane. I was born on [DOB]. My card is [CARD] and my email is [EMAIL]. You can "
                        "call me on [PHONE]. Oh and my social is [SSN].")
    assert sorted(out.kinds) == sorted(ALL_KINDS)


def test_each_kind_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "card 4111 1111 1111 1111, email a@b.com"
    monkeypatch.setenv("SWITCHBOARD_REDACT_EMAILS", "false")
    assert SinkSettings().redactor()(text) == "card [CARD], email a@b.com"
    monkeypatch.setenv("SWITCHBOARD_REDACT", "false")
    assert SinkSettings().redactor()(text) == text


def test_caller_numbers_are_stored_masked_and_hashed_with_a_key() -> None:
    assert mask_caller("+1 (415) 555-2671") == "***2671"
    assert mask_caller(None) == ""
    assert caller_hash("+14155552671", "a") == caller_hash("+1 415 555 2671", "a")
    assert caller_hash("+14155552671", "a") != caller_hash("+14155552671", "b")
    assert "2671" not in caller_hash("+14155552671", "a")
    # an HMAC of the digits: without the key, hashing every phone number finds nothing
    assert caller_hash("+14155552671", "k") == hmac.new(b"k", b"14155552671", hashlib.sha256).hexdigest()[:16]
    assert caller_hash("+14155552671", "k") != hashlib.sha256(b"k:14155552671").hexdigest()[:16]


@pytest.mark.parametrize(("mode", "shown"), [("masked", "***2671"), ("hashed", None), ("clear", "+14155552671")])
def test_a_call_event_publishes_the_caller_number_as_the_mode_says_with_its_keyed_hash(
    mode: str, shown: str | None
) -> None:
    number, attrs = published_caller("+14155552671", mode, "key")
    assert number == shown
    assert attrs == {"caller_hash": caller_hash("+14155552671", "key")}
    assert published_caller(None, mode, "key") == (None, {})
    assert published_caller("anonymous", mode, "key")[1] == {}  # no digits: nothing to count


def test_an_unknown_caller_number_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="masked"):
        published_caller("+14155552671", "plain", "key")


def test_without_a_configured_key_the_process_uses_one_random_key() -> None:
    assert caller_hash_key("configured") == "configured"
    assert caller_hash_key("") == caller_hash_key("") != ""
    assert len(caller_hash_key("")) >= 32


@pytest.mark.parametrize(("text", "masked"), [
    ("caller +14155552671 connected", "caller ***2671 connected"),
    ("GET /acs/media%3Fcaller_number=%2B14155552671", "GET /acs/media%3Fcaller_number=***2671"),
    ("call from (415) 555-2671 ended", "call from ***2671 ended"),
    ("call from 415-555-2671 ended", "call from ***2671 ended"),
    ("+44 20 7946 0958 rang", "***0958 rang"),
])
def test_log_text_masks_numbers_written_like_phone_numbers(text: str, masked: str) -> None:
    assert mask_phones(text) == masked


@pytest.mark.parametrize("text", [
    "flushed 100000 rows in 12.5 ms", "offset 1234567 of partition 31", "at 2026-11-27 10:57:27.123",
    "from 192.168.100.200:8080", "call CA0123456789abcdef0123456789abcdef", "ts_us 1764240000000000",
    "trace 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
])
def test_log_text_keeps_ids_offsets_times_and_addresses(text: str) -> None:
    assert mask_phones(text) == text


def test_log_fields_named_like_a_number_are_masked_whatever_their_form() -> None:
    assert mask_log_field("caller_number", "14155552671") == "***2671"
    assert mask_log_field("from", "4155552671") == "***2671"
    assert mask_log_field("partition", 12) == 12
    assert mask_log_field("call_id", "call-14155552671") == "call-14155552671"
    assert mask_log_field("text", "ring +14155552671") == "ring ***2671"


def test_the_sinks_modules_are_the_shared_cores_redactor() -> None:
    import sinks.numbers
    import sinks.redact

    assert sinks.redact.Redactor is Redactor and sinks.redact.caller_hash is caller_hash
    assert sinks.numbers.find_runs is find_runs


def test_the_shared_redactor_imports_no_sink_or_processor() -> None:
    code = ("import sys, switchboard.redact, switchboard.numbers, switchboard.logs; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sinks', 'processors', 'ingress')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_log_lines_are_redacted_before_they_are_written() -> None:
    from switchboard.redact import RedactingFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    handler.addFilter(RedactingFilter(Redactor()))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("caller said %s", "my card is 4111 1111 1111 1111", extra={"fields": {"text": "mail a@b.com"}})
    finally:
        log.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["msg"] == "caller said my card is [CARD]"
    assert line["text"] == "mail [EMAIL]"
