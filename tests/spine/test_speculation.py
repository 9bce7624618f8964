"""The speculative reply, record by record (no Kafka): the agent answers the early transcript on a copy of the
call's state, TTS holds the audio, and only a confirmed turn is ever said (processors/agent/speculation.py,
processors/tts/hold.py)."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY

from processors.agent.logic import AgentProcessor
from processors.agent.policy import ClinicPolicy
from processors.agent.speculation import allowed
from processors.agent.state import MemoryStore
from processors.tts.hold import Hold
from processors.tts.logic import Synthesizer
from processors.tts.piper import PiperEngine
from switchboard.bus import Correlation
from switchboard.records import (
    AgentReply,
    AudioOut,
    AudioOutKind,
    CallEvent,
    CallEventKind,
    DialogState,
    ReplyKind,
    Timings,
    Transcript,
    TranscriptKind,
    TurnEvent,
    TurnEventKind,
)
from switchboard.runner import Incoming
from switchboard.topics import CALLS, REPLIES, TRANSCRIPTS, TURNS

CORR = Correlation(call_id="CA1")


async def _outs(proc, record, topic):
    return [o async for o in proc.handle(Incoming(record, CORR, topic, 0, 0, 0))]


def _replies(outs) -> list[AgentReply]:
    return [o.record for o in outs if isinstance(o.record, AgentReply)]


def _kinds(outs) -> list[ReplyKind]:
    return [r.kind for r in _replies(outs)]


def _transcript(kind: TranscriptKind, turn: int, text: str) -> Transcript:
    timings = Timings(speech_end_us=1, turn_detected_us=2) if kind is TranscriptKind.FINAL else None
    return Transcript("CA1", turn, kind, text, "en-US", 900, "moonshine", 2, timings=timings)


def _early(turn: int, text: str) -> Transcript:
    return _transcript(TranscriptKind.EARLY, turn, text)


def _final(turn: int, text: str) -> Transcript:
    return _transcript(TranscriptKind.FINAL, turn, text)


def _whole(turn: int, text: str, audio_ms: int = 900) -> Transcript:
    """An early transcript of the whole turn so far: STT's final if the caller says no more after its pause."""
    early = _transcript(TranscriptKind.EARLY, turn, text)
    early.audio_ms, early.stands_for_turn, early.ts_us = audio_ms, True, 3
    return early


def _end(turn: int, early_audio_ms: int | None = 900, reason: str = "complete") -> TurnEvent:
    timings = Timings(speech_start_us=1, speech_end_us=5, turn_detected_us=7, pause_detected_us=6, end_reason=reason)
    return TurnEvent("CA1", turn, TurnEventKind.END_OF_TURN, 7, 1, 5, end_reason=reason,
                     early_audio_ms=early_audio_ms, timings=timings)


def _confirmed(by: str) -> float:
    return REGISTRY.get_sample_value("switchboard_speculation_confirmed_total", {"by": by}) or 0.0


def _ended() -> CallEvent:
    return CallEvent("CA1", "MZ1", CallEventKind.CALL_ENDED, 9, "twilio", "clinic", "en-US", "node", 5)


def _outcome(outcome: str) -> float:
    return REGISTRY.get_sample_value("switchboard_speculation_total", {"outcome": outcome}) or 0.0


async def _greeted(speculate: str = "offline") -> AgentProcessor:
    agent = AgentProcessor(ClinicPolicy(), MemoryStore(), speculate=speculate)
    await _outs(agent, CallEvent("CA1", "MZ1", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US", "n", 5),
                CALLS)
    return agent


# -- the agent --


async def test_an_early_transcript_gets_a_speculative_reply_and_the_call_state_is_untouched():
    agent = await _greeted()
    outs = await _outs(agent, _early(4, "I'd like to book an appointment"), TRANSCRIPTS)
    assert _kinds(outs) and set(_kinds(outs)) == {ReplyKind.SPECULATIVE}  # nothing to be said yet, no END
    assert "day" in _replies(outs)[0].text
    assert not [o for o in outs if isinstance(o.record, DialogState)]  # the changelog never sees the copy
    state = agent.states["CA1"]
    assert (state.stage, state.turns, state.last_turn_seq) == ("await_intent", 0, 0)


async def test_the_final_with_the_same_words_says_the_speculative_reply_and_adopts_its_state_once():
    agent = await _greeted()
    await _outs(agent, _final(4, "I'd like to book an appointment"), TRANSCRIPTS)  # now at ask_day
    used = _outcome("used")
    speculative = _replies(await _outs(agent, _early(8, "Thursday"), TRANSCRIPTS))
    outs = await _outs(agent, _final(8, "  thursday. "), TRANSCRIPTS)  # case, spacing, punctuation: the same turn

    said = [r for r in _replies(outs) if r.kind is ReplyKind.SENTENCE]
    assert [(r.seq, r.text) for r in said] == [(r.seq, r.text) for r in speculative]
    assert "What time on Thursday" in said[0].text
    assert _kinds(outs)[-1] is ReplyKind.END and ReplyKind.DISCARD not in _kinds(outs)
    assert said[0].timings.speculation == "used" and said[0].timings.turn_detected_us == 2
    [saved] = [o.record for o in outs if isinstance(o.record, DialogState)]
    # advanced once by the speculation (ask_day → ask_time), not again by the final
    assert (saved.stage, saved.turns, saved.last_turn_seq) == ("ask_time", 2, 8)
    assert agent.states["CA1"].stage == "ask_time"
    assert _outcome("used") == used + 1
    assert await _outs(agent, _final(8, "Thursday"), TRANSCRIPTS) == []  # a replay is not answered twice


async def test_slots_the_call_state_changed_meanwhile_are_kept_when_the_speculation_is_adopted():
    agent = await _greeted()
    await _outs(agent, _early(4, "I'd like to book an appointment"), TRANSCRIPTS)
    agent.states["CA1"].slots["note"] = "playback finished"  # a playback note between the early and the final
    outs = await _outs(agent, _final(4, "I'd like to book an appointment"), TRANSCRIPTS)
    assert ReplyKind.DISCARD not in _kinds(outs)
    assert agent.states["CA1"].slots["note"] == "playback finished" and agent.states["CA1"].stage == "ask_day"


async def test_an_end_of_turn_silent_after_the_pause_answered_says_the_speculation_without_waiting_for_the_final():
    agent = await _greeted()
    by_end = _confirmed("end_of_turn")
    speculative = _replies(await _outs(agent, _whole(4, "I'd like to book an appointment"), TRANSCRIPTS))
    outs = await _outs(agent, _end(4), TURNS)

    said = [r for r in _replies(outs) if r.kind is ReplyKind.SENTENCE]
    assert [(r.seq, r.text) for r in said] == [(r.seq, r.text) for r in speculative]
    assert _kinds(outs)[-1] is ReplyKind.END
    t = said[0].timings  # the turn's own timestamps, from the end-of-turn event, and when the words were known
    assert (t.speculation, t.turn_detected_us, t.speech_end_us, t.pause_detected_us, t.early_transcript_us) == (
        "used", 7, 5, 6, 3)
    assert agent.states["CA1"].stage == "ask_day" and agent.states["CA1"].last_turn_seq == 4
    assert _confirmed("end_of_turn") == by_end + 1
    # STT's final of the same turn follows one hop later: the turn is answered, nothing is said twice
    assert await _outs(agent, _final(4, "I'd like to book an appointment"), TRANSCRIPTS) == []


async def test_an_end_of_turn_that_overtakes_its_early_transcript_is_answered_when_the_transcript_comes():
    """The end-of-turn event and the early transcript travel on different topics: either may reach the agent first."""
    agent = await _greeted()
    assert await _outs(agent, _end(4), TURNS) == []  # nothing to say yet
    outs = await _outs(agent, _whole(4, "I'd like to book an appointment"), TRANSCRIPTS)
    kinds = _kinds(outs)
    assert kinds[0] is ReplyKind.SPECULATIVE and ReplyKind.SENTENCE in kinds and kinds[-1] is ReplyKind.END
    assert agent.states["CA1"].last_turn_seq == 4 and not agent.turn_ends


async def test_a_second_pause_on_the_same_words_keeps_the_reply_and_the_end_after_it_confirms_it():
    agent = await _greeted()
    first = _replies(await _outs(agent, _whole(4, "I'd like to book an appointment", audio_ms=900), TRANSCRIPTS))
    # a breath, then silence again: the same words at a later pause are not answered twice
    assert await _outs(agent, _whole(4, "I'd like to book an appointment.", audio_ms=1300), TRANSCRIPTS) == []
    outs = await _outs(agent, _end(4, 1300), TURNS)
    said = [r for r in _replies(outs) if r.kind is ReplyKind.SENTENCE]
    assert [(r.seq, r.text) for r in said] == [(r.seq, r.text) for r in first]


@pytest.mark.parametrize(
    ("early", "end", "why"),
    [
        (_early(4, "I'd like to book an appointment"), _end(4), "the early decode does not stand for the turn"),
        (_whole(4, "I'd like to book an appointment", audio_ms=600), _end(4, 900), "the turn went on after that pause"),
        (_whole(4, "I'd like to book an appointment"), _end(4, None), "voice after the last pause"),
        (_whole(4, "uh-huh"), _end(4, reason="backchannel"), "a backchannel takes no turn"),
    ],
)
async def test_an_end_of_turn_that_does_not_name_the_pause_answered_leaves_the_turn_to_the_final(early, end, why):
    agent = await _greeted()
    await _outs(agent, early, TRANSCRIPTS)
    assert await _outs(agent, end, TURNS) == [], why
    assert agent.states["CA1"].stage == "await_intent" and "CA1" in agent.speculations  # still held for the FINAL
    outs = await _outs(agent, _final(4, early.text), TRANSCRIPTS)
    if end.end_reason != "backchannel":  # (STT sends no final for a backchannel)
        assert ReplyKind.SENTENCE in _kinds(outs) and agent.states["CA1"].last_turn_seq == 4


async def test_an_end_of_turn_after_the_call_state_changed_leaves_the_turn_to_the_final():
    agent = await _greeted()
    await _outs(agent, _whole(4, "I'd like to book an appointment"), TRANSCRIPTS)
    agent.states["CA1"].updated_us += 1  # a key press answered in between: the copy is stale
    assert await _outs(agent, _end(4), TURNS) == []


async def test_a_final_with_other_words_discards_the_speculation_and_answers_afresh():
    agent = await _greeted()
    mismatch = _outcome("mismatch")
    await _outs(agent, _early(4, "I'd like to book an"), TRANSCRIPTS)
    outs = await _outs(agent, _final(4, "I'd like to book an appointment on Friday at ten"), TRANSCRIPTS)
    kinds = _kinds(outs)
    assert kinds[0] is ReplyKind.DISCARD and _replies(outs)[0].turn_seq == 4
    assert ReplyKind.SENTENCE in kinds and kinds[-1] is ReplyKind.END
    said = [r for r in _replies(outs) if r.kind is ReplyKind.SENTENCE]
    assert "Friday" in " ".join(r.text for r in said)  # the answer to the whole sentence
    assert said[0].timings.speculation == "discarded"
    assert _outcome("mismatch") == mismatch + 1
    assert agent.states["CA1"].turns == 1


async def test_a_newer_early_transcript_of_the_turn_discards_the_older_speculation():
    agent = await _greeted()
    discarded = _outcome("discarded")
    await _outs(agent, _early(4, "I'd like to book an"), TRANSCRIPTS)
    outs = await _outs(agent, _early(4, "I'd like to book an appointment"), TRANSCRIPTS)
    assert _kinds(outs)[0] is ReplyKind.DISCARD and set(_kinds(outs)[1:]) == {ReplyKind.SPECULATIVE}
    assert _outcome("discarded") == discarded + 1
    # the same words again (another pause, nothing new said): the speculation stands, nothing is re-made
    assert await _outs(agent, _early(4, "I'd like to book an appointment"), TRANSCRIPTS) == []
    outs = await _outs(agent, _final(4, "I'd like to book an appointment"), TRANSCRIPTS)
    assert ReplyKind.DISCARD not in _kinds(outs) and ReplyKind.SENTENCE in _kinds(outs)


async def test_a_hang_up_discards_the_speculation_and_nothing_is_said():
    agent = await _greeted()
    discarded = _outcome("discarded")
    await _outs(agent, _early(4, "I'd like to book an appointment"), TRANSCRIPTS)
    await _outs(agent, _ended(), CALLS)
    assert _outcome("discarded") == discarded + 1
    assert await _outs(agent, _final(4, "I'd like to book an appointment"), TRANSCRIPTS) == []


async def test_speculation_follows_the_setting_and_the_calls_engine():
    assert allowed("offline", "policy") and not allowed("offline", "openai") and allowed("always", "openai")
    assert not allowed("off", "policy")
    agent = await _greeted(speculate="off")
    assert await _outs(agent, _early(4, "I'd like to book an appointment"), TRANSCRIPTS) == []
    agent = await _greeted()
    agent.states["CA1"].slots["engine"] = "openai"  # a cloud LLM: its speculation would cost tokens
    assert await _outs(agent, _early(4, "I'd like to book an appointment"), TRANSCRIPTS) == []


# -- TTS: held, said only once confirmed --


@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    return PiperEngine()


def _reply(kind: ReplyKind, text: str = "", turn: int = 4, seq: int = 0, ts: int = 10) -> AgentReply:
    timings = Timings(turn_detected_us=2, agent_first_sentence_us=3) if kind is ReplyKind.SENTENCE else None
    return AgentReply("CA1", turn, seq, kind, text, 5, "policy", ts, timings=timings)


def _pcm(outs) -> bytes:
    audio = [o.record for o in outs if isinstance(o.record, AudioOut) and o.record.kind is AudioOutKind.AUDIO]
    return b"".join(a.pcm for a in audio)


SENTENCE = "Which day would suit you?"


async def test_tts_holds_speculative_audio_and_sends_it_only_when_the_sentence_is_confirmed(piper):
    tts = Synthesizer(piper)
    held = await _outs(tts, _reply(ReplyKind.SPECULATIVE, SENTENCE), REPLIES)
    assert not [o for o in held if isinstance(o.record, AudioOut)]  # nothing reaches audio.out while held
    held = tts.hold.current("CA1").sentences[0]
    assert held.text == SENTENCE and sum(len(p) for p in held.parts) > 16_000 // 2  # synthesised ahead
    parts = list(held.parts)

    said = await _outs(tts, _reply(ReplyKind.SENTENCE, SENTENCE, ts=20), REPLIES)
    audio = [o.record for o in said if isinstance(o.record, AudioOut)]
    assert audio and all(o.partition == 5 for o in said if isinstance(o.record, AudioOut))
    assert _pcm(said).startswith(np.concatenate(parts).astype("<i2").tobytes())  # what was held, as it was made
    assert audio[0].timings.tts_first_audio_us is not None and audio[0].timings.turn_detected_us == 2
    end = await _outs(tts, _reply(ReplyKind.END, seq=1, ts=21), REPLIES)
    assert [o.record.kind for o in end] == [AudioOutKind.END] and len(tts.hold) == 0


async def test_tts_holds_the_first_clause_of_the_first_sentence_and_makes_the_rest_once_confirmed(piper):
    from processors.tts.first_clause import FirstClauseTts

    tts = Synthesizer(FirstClauseTts(piper))
    long = "You're booked for Thursday at ten in the morning with Doctor Patel."
    await _outs(tts, _reply(ReplyKind.SPECULATIVE, long), REPLIES)
    assert await _outs(tts, _reply(ReplyKind.SPECULATIVE, "Anything else?", seq=1), REPLIES) == []
    held = tts.hold.current("CA1").sentences
    assert list(held) == [0] and len(held[0].parts) == 1 and held[0].rest is not None  # the first clause alone
    first = held[0].parts[0].astype("<i2").tobytes()
    said = _pcm(await _outs(tts, _reply(ReplyKind.SENTENCE, long, ts=20), REPLIES))
    assert said.startswith(first) and len(said) > len(first) + 16_000  # and the rest, made on confirmation
    assert _pcm(await _outs(tts, _reply(ReplyKind.SENTENCE, "Anything else?", seq=1, ts=21), REPLIES))


async def test_tts_drops_a_discarded_speculation_and_never_sends_its_audio(piper):
    tts = Synthesizer(piper)
    outs = await _outs(tts, _reply(ReplyKind.SPECULATIVE, SENTENCE), REPLIES)
    outs += await _outs(tts, _reply(ReplyKind.DISCARD, seq=1, ts=11), REPLIES)
    assert not [o for o in outs if isinstance(o.record, AudioOut)] and len(tts.hold) == 0
    # the fresh answer to the final is made anew: its text, not the discarded one's
    said = await _outs(tts, _reply(ReplyKind.SENTENCE, "What time on Friday?", ts=12), REPLIES)
    assert len(_pcm(said)) > 16_000  # made anew
    assert REGISTRY.get_sample_value("switchboard_tts_hold_total", {"fate": "dropped"}) >= 1


async def test_tts_skips_speculative_sentences_whose_discard_the_watcher_already_saw(piper):
    tts = Synthesizer(piper)
    await tts.on_watched(_reply(ReplyKind.DISCARD, seq=1, ts=11))  # read ahead, while earlier records queue
    assert await _outs(tts, _reply(ReplyKind.SPECULATIVE, SENTENCE, ts=10), REPLIES) == []
    assert len(tts.hold) == 0
    await _outs(tts, _reply(ReplyKind.SPECULATIVE, SENTENCE, ts=12), REPLIES)  # a newer speculation is made
    assert len(tts.hold) == 1


async def test_tts_forgets_held_audio_when_the_call_ends(piper):
    tts = Synthesizer(piper)
    await _outs(tts, _reply(ReplyKind.SPECULATIVE, SENTENCE), REPLIES)
    await _outs(tts, _ended(), CALLS)
    assert len(tts.hold) == 0
    assert await _outs(tts, _reply(ReplyKind.SENTENCE, SENTENCE, ts=20), REPLIES) == []


def test_the_hold_is_bounded_and_expires():
    now = [0.0]
    hold = Hold(timeout_s=5.0, max_audio_s=1.0, max_calls=2, clock=lambda: now[0])
    second = np.zeros(16_000, dtype=np.int16)
    hold.begin("a", 1, 1)
    assert hold.put("a", 0, "one", [second], None) and not hold.put("a", 1, "two", [second], None)  # 1 s a call
    assert hold.take("a", 1, 0, "other words") is None  # confirmed text must match what was made
    hold.begin("b", 1, 1)
    hold.begin("c", 1, 1)
    assert hold.current("a") is None and len(hold) == 2  # the oldest call went first
    now[0] = 6.0
    assert len(hold) == 0  # held past the timeout: evicted
