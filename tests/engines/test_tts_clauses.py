"""Where a sentence is cut so its first clause can be synthesised and heard alone (processors/tts/clauses.py)."""

from __future__ import annotations

import pytest

from processors.tts.clauses import Split, split_first_clause
from processors.tts.phrase_cache import CLAUSE_PHRASES, PhraseCache


def cut(text: str, **kwargs) -> tuple[str, str] | None:
    split = split_first_clause(text, **kwargs)
    return (split.first, split.rest) if split else None


def test_a_long_sentence_is_cut_after_its_first_clause_where_the_voice_pauses():
    assert split_first_clause("Just to confirm, I'll book you in for Monday at 3:30 PM.") == Split(
        "Just to confirm,", "I'll book you in for Monday at 3:30 PM.", at_pause=True
    )
    assert cut("I can book, reschedule or cancel an appointment, or tell you our opening hours.") == (
        "I can book,", "reschedule or cancel an appointment, or tell you our opening hours.")
    assert cut("Okay; let me look at the calendar for next week.") == (
        "Okay;", "let me look at the calendar for next week.")
    assert cut("One thing first: the clinic is closed on public holidays.") == (
        "One thing first:", "the clinic is closed on public holidays.")
    assert cut("Sure. I can move it to the afternoon if you like.") == (
        "Sure.", "I can move it to the afternoon if you like.")


def test_a_dash_is_a_pause_whether_spaced_or_not_but_a_hyphen_is_part_of_a_word():
    assert cut("Right — let me check that for you now, it only takes a moment.") == (
        "Right —", "let me check that for you now, it only takes a moment.")
    assert cut("Right—let me check that for you now, it only takes a moment.") == (
        "Right —", "let me check that for you now, it only takes a moment.")
    first, _ = cut("Your check-up is booked for the morning of the first of June.")
    assert "check-up" in first.split()


def test_without_a_pause_in_reach_the_cut_falls_between_words_before_a_phrase():
    assert split_first_clause("You're booked for Thursday at 10 AM.") == Split(
        "You're booked for Thursday", "at 10 AM.", at_pause=False
    )
    assert cut("Your appointment is now on tomorrow at 3 PM.") == ("Your appointment is now", "on tomorrow at 3 PM.")
    # a pause too far away for a short first clause does not count
    assert cut("We have a few openings left later this week, on Thursday and Friday.") == (
        "We have a few", "openings left later this week, on Thursday and Friday.")


@pytest.mark.parametrize("text", [
    "You're booked for Thursday at 10 AM.",
    "Your appointment is now on Friday at 3:30 PM.",
    "The doctor can see you on Tuesday at 9 a.m. or at 4 p.m.",
    "Dr. Smith can see you on Tuesday the fourth of May.",
    "Please ask Mrs. O'Brien at reception about the 20 percent discount.",
    "The total comes to 3,000 dollars and 50 cents for everything.",
    "The scan takes about 1.5 hours and costs 250 dollars.",
    "We are open 9–5 on weekdays and on Saturday mornings.",
])
def test_a_number_a_time_or_an_abbreviation_is_never_cut(text):
    first, rest = cut(text)
    assert f"{first} {rest}" == text
    last, following = first.split()[-1], rest.split()[0]
    assert not any(ch.isdigit() for ch in last), "a number keeps what follows it (3:30 PM, 20 percent)"
    assert last not in ("Dr.", "Mrs.", "a.m.", "at", "the", "of", "on")
    assert following not in ("PM.", "a.m.", "p.m.", "percent", "dollars")


def test_a_comma_inside_a_number_is_not_a_pause():
    assert cut("It is 3,000 dollars, payable at the desk when you arrive.") == (
        "It is 3,000 dollars,", "payable at the desk when you arrive.")
    assert cut("Die Behandlung dauert etwa 3,5 Stunden und kostet zwanzig Euro.")[0] == "Die Behandlung dauert etwa"


def test_the_first_part_stays_short():
    for text in ("Your appointment with the hygienist and the dentist is on Monday at noon.",
                 "Thank you so much for waiting while I checked all of that for you, it is done."):
        first, _ = cut(text)
        assert len(first.split()) <= 5


def test_short_sentences_stay_whole():
    for text in ("Your appointment on Monday is cancelled.", "Sure, I can help.", "Is that right?", "Goodbye!",
                 "What time on Monday works?", "", "   ", "Hello."):
        assert split_first_clause(text) is None, text


def test_a_short_sentence_with_a_cached_opener_plays_the_opener_from_the_cache():
    cache = PhraseCache(CLAUSE_PHRASES)
    assert cut("Sure, I can help.", cached=cache.cacheable) == ("Sure,", "I can help.")
    assert cut("Just to confirm, you want to cancel your appointment on Friday?", cached=cache.cacheable) == (
        "Just to confirm,", "you want to cancel your appointment on Friday?")
    assert cut("Sure.", cached=cache.cacheable) is None  # nothing after it


def test_other_languages_keep_working():
    assert cut("Claro, le he reservado una cita para el lunes a las 3:30.") == (
        "Claro,", "le he reservado una cita para el lunes a las 3:30.")
    # between words: not after an article, a number keeps its unit
    assert cut("¿Le parece bien el lunes a las 10:00 de la mañana?") == (
        "¿Le parece bien", "el lunes a las 10:00 de la mañana?")
    assert cut("D'accord, M. Dupont vous recevra mardi à 15 h 30.") == (
        "D'accord,", "M. Dupont vous recevra mardi à 15 h 30.")
    german = "Herr Dr. Müller hat am Montag um 14:30 Uhr einen Termin frei."
    first, rest = cut(german)
    assert first.split()[-1] != "Dr." and f"{first} {rest}" == german
    # written without spaces: never cut (no word boundaries to trust)
    assert split_first_clause("好的，我已经为您预约了星期一下午三点。") is None
    assert split_first_clause("かしこまりました、月曜日の午後三時にご予約をお取りしました。") is None
