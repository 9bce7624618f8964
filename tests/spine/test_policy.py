import pytest

from processors.agent.engine import ENDED
from processors.agent.policy import ClinicPolicy, day_of, intent_of, time_of
from switchboard.records import DialogState


def _state() -> DialogState:
    return DialogState("CA1", "greeting", 0, 0, 0, "en-US", False, 0)


async def _say(policy: ClinicPolicy, state: DialogState, text: str) -> str:
    return " ".join([s async for s in policy.respond(state, text)])


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Hi, I'd like to book an appointment please.", "book"),
        ("I need to reschedule my appointment", "reschedule"),
        ("Can I cancel my visit on Friday?", "cancel"),
        ("What are your opening hours?", "hours"),
        ("Can I talk to a real person?", "human"),
        ("He was not an ill disposed young man.", None),
    ],
)
def test_intents_are_recognised_from_whisper_style_text(text, intent):
    assert intent_of(text) == intent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("At 10 a.m. please", "10 AM"),
        ("ten in the morning", "10 AM"),
        ("3:30 PM", "3:30 PM"),
        ("around noon", "12 PM"),
        ("two o'clock", "2 PM"),
        ("Tuesday", None),
        ("At ten,", "10 AM"),  # Moonshine, now and then, for a Piper "At 10 a.m."
        ("at two", "2 PM"),
        ("one moment, please", None),
        ("the two of us", None),
    ],
)
def test_times_are_read_as_whisper_writes_them(text, expected):
    assert time_of(text) == expected


def test_days_are_recognised():
    assert day_of("next Tuesday, please") == "Tuesday"
    assert day_of("tomorrow works") == "tomorrow"


async def test_booking_collects_day_and_time_confirms_and_says_goodbye():
    policy, state = ClinicPolicy(), _state()
    greeting = " ".join([s async for s in policy.greet(state)])
    assert "Riverside Clinic" in greeting
    assert "day" in await _say(policy, state, "I'd like to book an appointment.")
    assert "What time on Tuesday" in await _say(policy, state, "Tuesday.")
    confirm = await _say(policy, state, "Ten in the morning.")
    assert "Tuesday at 10 AM" in confirm and state.stage == "confirm"
    assert "You're booked for Tuesday at 10 AM" in await _say(policy, state, "Yes, that's right.")
    bye = await _say(policy, state, "No thanks, that's all. Goodbye.")
    assert "Goodbye" in bye and state.stage == ENDED and state.slots["outcome"] == "resolved"


async def test_day_and_time_in_one_sentence_go_straight_to_confirmation():
    policy, state = ClinicPolicy(), _state()
    state.stage = "await_intent"
    assert "Friday at 3 PM" in await _say(policy, state, "Can I book something on Friday at 3 pm?")


async def test_saying_no_at_confirmation_asks_for_another_day():
    policy, state = ClinicPolicy(), _state()
    state.stage = "await_intent"
    await _say(policy, state, "Book me on Monday at 9 am")
    assert "Which day" in await _say(policy, state, "No.")
    assert "day" not in state.slots


async def test_cancelling_needs_only_the_day():
    policy, state = ClinicPolicy(), _state()
    state.stage = "await_intent"
    assert "cancel your appointment on Wednesday" in await _say(policy, state, "Cancel my Wednesday appointment")
    assert "is cancelled" in await _say(policy, state, "Yes")


async def test_asking_for_a_human_hands_off_and_ends():
    policy, state = ClinicPolicy(), _state()
    state.stage = "await_intent"
    assert "put you through" in await _say(policy, state, "Let me speak to a receptionist")
    assert state.stage == ENDED and state.slots["outcome"] == "handoff"


async def test_repeated_misunderstanding_falls_back_politely_then_hands_off():
    policy, state = ClinicPolicy(max_fallbacks=3), _state()
    state.stage = "await_intent"
    assert "Sorry" in await _say(policy, state, "He was not an ill disposed young man.")
    assert "Sorry" in await _say(policy, state, "Unless to be rather cold hearted.")
    assert "put you through" in await _say(policy, state, "Mister John Dashwood.")


# Every conversation path of the policy, said twice with different days and times: a sentence that
# comes out the same both times is fixed text, and must be in the TTS phrase cache (played at once).
_PATHS = (
    ("book an appointment", "{day}", "{time}", "yes", "goodbye"),
    ("book an appointment on {day} at {time}", "no", "{day}", "{time}", "yes"),
    ("I need to reschedule", "{day} at {time}", "hmm", "yes"),
    ("cancel my appointment", "{day}", "yes"),
    ("what are your opening hours", "that's all"),
    ("blah", "blah", "blah"),
    ("book", "talk to a person"),
)


async def _sentences(day: str, time: str) -> list[list[str]]:
    said = []
    for path in _PATHS:
        policy, state = ClinicPolicy(), _state()
        lines = [s async for s in policy.greet(state)]
        for text in path:
            lines += [s async for s in policy.respond(state, text.format(day=day, time=time))]
        said.append(lines)
    return said


async def test_every_fixed_sentence_of_the_policy_is_served_from_the_phrase_cache():
    from processors.tts.phrase_cache import DEFAULT_PHRASES
    from processors.tts.settings import TtsSettings

    first, second = await _sentences("Monday", "10 AM"), await _sentences("Thursday", "3 PM")
    fixed = {a for run_a, run_b in zip(first, second, strict=True) for a, b in zip(run_a, run_b, strict=True) if a == b}
    templated = {a for run_a, run_b in zip(first, second, strict=True) for a, b in zip(run_a, run_b, strict=True)
                 if a != b}
    assert len(fixed) >= 15 and templated  # the paths reach the policy's sentences, fixed and with slots
    assert fixed <= set(DEFAULT_PHRASES)
    assert not templated & set(DEFAULT_PHRASES)  # a caller's day or time is never cached
    assert TtsSettings().phrase_cache  # on by default, warmed at start-up


def test_the_keypad_and_silence_sentences_are_fixed_and_in_the_phrase_cache():
    from processors.agent import policy
    from processors.tts.phrase_cache import DEFAULT_PHRASES

    state = _state()
    said = [*policy.still_there(state), *policy.handoff(_state()), *policy.let_go(state), policy.KEYS_HINT]
    assert "Are you still there?" in said and "I'll let you go now. Goodbye." in said
    assert "press 1" in policy.KEYS_HINT and "press 2" in policy.KEYS_HINT
    assert set(said) <= set(DEFAULT_PHRASES)
