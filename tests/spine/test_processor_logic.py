"""Agent, STT and TTS logic as plain async transforms of typed records, without Kafka."""

import numpy as np
import pytest

from processors.agent.logic import AgentProcessor
from processors.agent.policy import ClinicPolicy
from processors.agent.state import MemoryStore
from processors.stt.logic import Transcriber
from processors.stt.whisper import WhisperEngine
from processors.tts.logic import Synthesizer
from processors.tts.piper import PiperEngine
from switchboard.audio import array_to_pcm16, read_wav
from switchboard.bus import Correlation
from switchboard.records import (
    AgentReply,
    AudioOut,
    AudioOutKind,
    CallEvent,
    CallEventKind,
    DialogState,
    EngineUsage,
    ReplyKind,
    SpeechChunk,
    Timings,
    Transcript,
    TranscriptKind,
    TurnEvent,
    TurnEventKind,
)
from switchboard.runner import Incoming
from switchboard.topics import CALLS, REPLIES, SPEECH, TRANSCRIPTS, TURNS
from switchboard.wer import wer
from tests.conftest import SHARED_AUDIO

CORR = Correlation(call_id="CA1")


async def _outs(proc, record, topic, offset=0, partition=0):
    return [o async for o in proc.handle(Incoming(record, CORR, topic, partition, offset, 0))]


def _started() -> CallEvent:
    return CallEvent("CA1", "MZ1", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US", "node", 5)


def _final(turn: int, text: str) -> Transcript:
    return Transcript(
        "CA1",
        turn,
        TranscriptKind.FINAL,
        text,
        "en-US",
        900,
        "whisper",
        2,
        timings=Timings(speech_end_us=1, turn_detected_us=2),
    )


async def test_agent_greets_a_new_call_on_its_reply_partition_and_saves_state():
    agent = AgentProcessor(ClinicPolicy(), MemoryStore())
    outs = await _outs(agent, _started(), CALLS)
    replies = [o.record for o in outs if isinstance(o.record, AgentReply)]
    assert [r.kind for r in replies] == [ReplyKind.SENTENCE, ReplyKind.SENTENCE, ReplyKind.END]
    assert all(r.turn_seq == 0 and r.reply_partition == 5 for r in replies)
    assert isinstance(outs[-1].record, DialogState) and outs[-1].record.stage == "await_intent"


async def test_agent_answers_each_final_transcript_once_even_if_redelivered():
    agent = AgentProcessor(ClinicPolicy(), MemoryStore())
    await _outs(agent, _started(), CALLS)
    first = await _outs(agent, _final(40, "I'd like to book an appointment"), TRANSCRIPTS)
    sentence = next(o.record for o in first if isinstance(o.record, AgentReply))
    assert "day" in sentence.text and sentence.timings.agent_first_sentence_us is not None
    assert await _outs(agent, _final(40, "I'd like to book an appointment"), TRANSCRIPTS) == []


async def test_agent_resumes_a_call_from_its_saved_state():
    store = MemoryStore()
    agent = AgentProcessor(ClinicPolicy(), store)
    await _outs(agent, _started(), CALLS)
    outs = await _outs(agent, _final(40, "Book an appointment please"), TRANSCRIPTS)
    store.saved["CA1"] = next(o.record for o in outs if isinstance(o.record, DialogState))
    restarted = AgentProcessor(ClinicPolicy(), store)
    await restarted.on_assigned({0})
    outs = await _outs(restarted, _final(90, "Thursday"), TRANSCRIPTS)
    assert "What time on Thursday" in next(o.record for o in outs if isinstance(o.record, AgentReply)).text


async def test_barge_in_makes_the_agent_cancel_the_interrupted_reply():
    agent = AgentProcessor(ClinicPolicy(), MemoryStore())
    await _outs(agent, _started(), CALLS)
    outs = await _outs(agent, TurnEvent("CA1", 30, TurnEventKind.BARGE_IN, 3, 2, cancelled_turn_seq=0), TURNS)
    assert [(o.record.kind, o.record.turn_seq) for o in outs] == [(ReplyKind.CANCEL, 0)]


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    return WhisperEngine()


def _chunks(turn: int, samples: np.ndarray, size: int = 320) -> list[SpeechChunk]:
    chunks = [
        SpeechChunk("CA1", turn, i // size, 0, 16000, array_to_pcm16(samples[i : i + size]), False, "en-US")
        for i in range(0, len(samples), size)
    ]
    chunks.append(
        SpeechChunk(
            "CA1", turn, len(chunks), 0, 16000, b"", True, "en-US", Timings(speech_end_us=5, turn_detected_us=6)
        )
    )
    return chunks


async def test_stt_transcribes_a_turn_and_reports_usage(whisper):
    samples, _ = read_wav(SHARED_AUDIO / "librivox-0890.wav")
    stt = Transcriber(whisper)
    outs = []
    for offset, chunk in enumerate(_chunks(7, samples)):
        outs += await _outs(stt, chunk, SPEECH, offset)
    final = next(o.record for o in outs if isinstance(o.record, Transcript))
    reference = (SHARED_AUDIO / "librivox-0890.txt").read_text()
    assert final.turn_seq == 7 and wer(reference, final.text) <= 0.15
    assert final.timings.stt_finished_us >= final.timings.stt_started_us > 0
    usage = next(o.record for o in outs if isinstance(o.record, EngineUsage))
    assert usage.stage == "stt" and abs(usage.stt_audio_seconds - len(samples) / 16000) < 0.05


async def test_stt_holds_the_commit_floor_at_an_open_turns_first_chunk_and_replays_cleanly(whisper):
    samples, _ = read_wav(SHARED_AUDIO / "librivox-0880.wav")
    chunks = _chunks(9, samples)
    stt = Transcriber(whisper)
    for offset, chunk in enumerate(chunks[:50], start=100):
        await _outs(stt, chunk, SPEECH, offset)
    assert stt.commit_floor(SPEECH, 0) == 100
    await stt.on_revoked({0})  # the partition moves away mid-turn
    assert stt.commit_floor(SPEECH, 0) is None
    replayed = Transcriber(whisper)  # the new owner reads from the floor, duplicates included
    outs = []
    for offset, chunk in enumerate(chunks[:20] + chunks, start=100):
        outs += await _outs(replayed, chunk, SPEECH, offset)
    finals = [o.record for o in outs if isinstance(o.record, Transcript)]
    assert len(finals) == 1 and finals[0].audio_ms == pytest.approx(len(samples) / 16, abs=20)


@pytest.fixture(scope="module")
def piper() -> PiperEngine:
    return PiperEngine()


def _reply(kind: ReplyKind, text: str = "", turn: int = 12, seq: int = 0, end_call: bool = False) -> AgentReply:
    return AgentReply(
        "CA1",
        turn,
        seq,
        kind,
        text,
        4,
        "policy",
        0,
        end_call=end_call,
        timings=Timings(agent_first_sentence_us=1) if seq == 0 else None,
    )


async def test_tts_sends_audible_audio_to_the_reply_partition_then_an_end(piper):
    tts = Synthesizer(piper, chunk_ms=200)
    outs = await _outs(tts, _reply(ReplyKind.SENTENCE, "Which day would suit you?"), REPLIES)
    audio = [o for o in outs if isinstance(o.record, AudioOut)]
    assert len(audio) > 3 and all(o.partition == 4 for o in audio)
    assert audio[0].record.timings.tts_first_audio_us is not None
    samples = np.frombuffer(b"".join(o.record.pcm for o in audio), dtype="<i2")
    assert np.sqrt(np.mean(samples.astype(float) ** 2)) > 300
    end = await _outs(tts, _reply(ReplyKind.END, seq=1, end_call=True), REPLIES)
    assert end[0].record.kind is AudioOutKind.END and end[0].record.end_call


async def test_tts_stops_a_cancelled_reply(piper):
    tts = Synthesizer(piper)
    await _outs(tts, _reply(ReplyKind.CANCEL), REPLIES)
    assert await _outs(tts, _reply(ReplyKind.SENTENCE, "And one more thing.", seq=1), REPLIES) == []
    assert await _outs(tts, _reply(ReplyKind.END, seq=2), REPLIES) == []


async def test_stt_usage_is_priced_from_the_price_table(whisper):
    from processors.usage import PriceTable

    samples, _ = read_wav(SHARED_AUDIO / "librivox-0880.wav")
    stt = Transcriber(whisper, PriceTable({"whisper": {"stt_audio_seconds": 0.01}}))
    outs = []
    for offset, chunk in enumerate(_chunks(3, samples)):
        outs += await _outs(stt, chunk, SPEECH, offset)
    usage = next(o.record for o in outs if isinstance(o.record, EngineUsage))
    assert usage.cost_usd == pytest.approx(0.01 * len(samples) / 16000, rel=0.02)
