"""A speculative reply is never heard when the caller keeps talking: the whole pipeline on the real broker, a caller
on the Twilio protocol, every service its own process with its real engine (Silero, Smart Turn, Moonshine, the
clinic policy, Piper).

The caller says a sentence whose first half already makes sense to answer ("I'd like to book an appointment …") and
pauses 450 ms before the rest ("… on Friday at ten."). At the pause the agent answers the early transcript
speculatively; the caller goes on, so that answer is thrown away unheard and the one played answers the whole
sentence (itself made speculatively, at the silence after it). A plain sentence without a pause is answered by the
speculative reply made at its end, said as soon as the end-of-turn event or the final reaches the agent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchboard.records import AgentReply, ReplyKind
from switchboard.stack import Stack
from tests.pipeline import running_stack
from tests.spine.pauses import RATE, Hesitation, _gap, hesitating, spoken
from tests.spine.test_early_turns_pipeline import PAUSE_MS, SPINE, _call

pytestmark = pytest.mark.slow

# The first half alone gets one answer from the clinic policy ("Which day would suit you?"), the whole another.
ANSWERABLE = (
    Hesitation("I'd like to book an appointment", "on Friday at ten.", ("book", "friday")),
    Hesitation("I want to make an appointment", "for Tuesday morning.", ("appointment", "tuesday")),
)


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory) -> Iterator[Stack]:
    # As in test_early_turns_pipeline: the fixed-silence fallback is pushed out of the way, so a loaded box cannot
    # end the turn at the pause before its verdict; SWITCHBOARD_SPECULATIVE_REPLY is left at its default (offline).
    with running_stack(broker, tmp_path_factory.mktemp("stack"), only=SPINE, SWITCHBOARD_END_OF_TURN_MS="3000") as s:
        yield s


@pytest.fixture(scope="module")
def piper():
    from processors.tts.piper import PiperEngine

    return PiperEngine()


def _of_turn(replies: list[AgentReply], turn: int, kind: ReplyKind) -> list[AgentReply]:
    return [r for r in replies if r.turn_seq == turn and r.kind is kind]


@pytest.mark.parametrize("hesitation", ANSWERABLE, ids=lambda h: h.first)
async def test_a_speculative_reply_made_at_a_pause_is_never_heard_when_the_caller_goes_on(stack, piper, hesitation):
    audio = hesitating(piper, hesitation, PAUSE_MS)
    caller, watcher, (began, ended) = await _call(stack, audio, hesitation.text)
    pause_end = began + _gap(audio)[1] / RATE

    [end] = watcher.ends()
    assert end.speech_end_us / 1e6 > pause_end, f"turn ended at the pause ({end.end_reason})"
    turn = end.turn_seq
    speculated = _of_turn(watcher.replies, turn, ReplyKind.SPECULATIVE)
    assert speculated, "no speculation was made at the pause"
    assert _of_turn(watcher.replies, turn, ReplyKind.DISCARD), "the speculation was not discarded"
    # nothing of the agent reached the caller while they spoke, pause included
    assert not [t for t in caller.media if began < t < ended]
    said = _of_turn(watcher.replies, turn, ReplyKind.SENTENCE)
    heard = " ".join(r.text for r in said)
    assert hesitation.heard[1] in heard.lower(), heard  # the answer to the whole sentence ("What time on Friday …")
    assert speculated[0].seq == 0 and speculated[0].text not in heard  # the pause's answer was never said
    # the whole sentence was answered speculatively too, at the silence after it, and that reply is the one played
    assert caller.result.latencies[turn].timings.speculation == "used"


async def test_a_plain_sentence_is_answered_by_the_speculative_reply(stack, piper):
    caller, watcher, _ = await _call(stack, spoken(piper, "I'd like to book an appointment."), "book")
    [end] = watcher.ends()
    turn = end.turn_seq
    speculated = _of_turn(watcher.replies, turn, ReplyKind.SPECULATIVE)
    said = _of_turn(watcher.replies, turn, ReplyKind.SENTENCE)
    assert said and [(r.seq, r.text) for r in said] == [(r.seq, r.text) for r in speculated]
    assert not _of_turn(watcher.replies, turn, ReplyKind.DISCARD)
    timings = caller.result.latencies[turn].timings
    assert timings.speculation == "used"
    # Said on the end-of-turn event, one hop after the turn ended, not on STT's final: no STT time on the turn, and the
    # early transcript it answered is timed. The final follows the end of turn by ~10 ms, so one fetch of the agent
    # often returns both; the runner hands them over in the order they were produced (switchboard/inflight.py
    # in_time_order), never the final first.
    assert timings.stt_finished_us is None and timings.early_transcript_us is not None, timings
    assert timings.pause_detected_us is not None and timings.end_decision_us is not None
    assert caller.result.agent_audio, "the held reply was not played"
