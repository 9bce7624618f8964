"""The turn detector on real speech (a LibriVox clip) framed as ingress frames it."""

import numpy as np
import pytest

from processors.turns import vad
from processors.turns.logic import TurnDetector
from processors.turns.settings import TurnsSettings
from switchboard.audio import array_to_pcm16, read_wav
from switchboard.bus import Correlation
from switchboard.records import AudioFrame, PlaybackCommand, SpeechChunk, TurnEvent, TurnEventKind
from switchboard.runner import Incoming
from switchboard.topics import AUDIO_IN
from tests.conftest import SHARED_AUDIO

FRAME = 320


def _frames(samples: np.ndarray, agent_turn: int | None = None, start_seq: int = 0):
    for i in range(0, len(samples) - FRAME + 1, FRAME):
        seq = start_seq + i // FRAME
        yield AudioFrame(
            "CA1", seq, 1_000_000 + seq * 20_000, 16000, array_to_pcm16(samples[i : i + FRAME]), 3, agent_turn
        )


async def _run(detector: TurnDetector, frames) -> list:
    outs = []
    for offset, frame in enumerate(frames):
        async for out in detector.handle(Incoming(frame, Correlation(call_id="CA1"), AUDIO_IN, 0, offset, 0)):
            outs.append(out)
    return outs


@pytest.fixture(params=["silero", "webrtc"])
def detector(request: pytest.FixtureRequest) -> TurnDetector:
    """The same behaviour with either voice activity engine (Silero is the default)."""
    settings = TurnsSettings(vad_engine=request.param)
    return TurnDetector(settings, vad.factory(settings))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, _ = read_wav(SHARED_AUDIO / "librivox-0880.wav")
    return samples


async def test_one_utterance_between_silences_is_one_turn_with_all_its_audio(detector, speech):
    silence = np.zeros(16000, dtype=np.int16)
    outs = await _run(detector, _frames(np.concatenate([silence, speech, silence])))
    events = [o.record for o in outs if isinstance(o.record, TurnEvent)]
    assert [e.kind for e in events] == [TurnEventKind.SPEECH_STARTED, TurnEventKind.END_OF_TURN]
    chunks = [o.record for o in outs if isinstance(o.record, SpeechChunk)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].final and chunks[-1].timings.speech_end_us is not None
    audio_s = sum(len(c.pcm) for c in chunks) / 32000
    assert len(speech) / 16000 - 0.5 < audio_s < len(speech) / 16000 + 1.0
    # the turn ID is the frame number at onset: the same on any worker
    assert events[0].turn_seq == chunks[0].turn_seq > 40


async def test_end_of_speech_is_the_last_voiced_frame_not_the_end_of_silence(detector, speech):
    silence = np.zeros(16000, dtype=np.int16)
    outs = await _run(detector, _frames(np.concatenate([silence, speech, silence])))
    end = next(o.record for o in outs if isinstance(o.record, TurnEvent) and o.record.kind is TurnEventKind.END_OF_TURN)
    speech_end_s = (end.speech_end_us - 1_000_000) / 1e6
    assert 1.0 + len(speech) / 16000 - 1.0 < speech_end_s <= 1.0 + len(speech) / 16000


async def test_records_carrying_several_frames_make_the_same_single_turn(detector, speech):
    silence = np.zeros(16000, dtype=np.int16)
    audio = np.concatenate([silence, speech, silence])
    block = 3 * FRAME  # 60 ms per record
    records = (
        AudioFrame("CA1", i // FRAME, 1_000_000 + i // FRAME * 20_000, 16000, array_to_pcm16(audio[i : i + block]), 3)
        for i in range(0, len(audio) - block + 1, block)
    )
    outs = await _run(detector, records)
    events = [o.record for o in outs if isinstance(o.record, TurnEvent)]
    assert [e.kind for e in events] == [TurnEventKind.SPEECH_STARTED, TurnEventKind.END_OF_TURN]
    audio_s = sum(len(o.record.pcm) for o in outs if isinstance(o.record, SpeechChunk)) / 32000
    assert len(speech) / 16000 - 0.5 < audio_s < len(speech) / 16000 + 1.0


async def test_silence_alone_makes_no_turn(detector):
    assert await _run(detector, _frames(np.zeros(48000, dtype=np.int16))) == []


async def test_speaking_over_the_agent_barges_in_and_clears_the_callers_reply_partition(detector, speech):
    outs = await _run(detector, _frames(speech, agent_turn=0))
    barge = [o for o in outs if isinstance(o.record, TurnEvent) and o.record.kind is TurnEventKind.BARGE_IN]
    clears = [o for o in outs if isinstance(o.record, PlaybackCommand)]
    assert len(barge) == 1 and barge[0].record.cancelled_turn_seq == 0
    assert len(clears) == 1 and clears[0].partition == 3 and clears[0].record.through_turn_seq >= 0


async def test_speech_while_the_agent_is_silent_is_not_a_barge_in(detector, speech):
    outs = await _run(detector, _frames(speech))
    assert not [o for o in outs if isinstance(o.record, PlaybackCommand)]


async def test_an_open_turn_holds_the_commit_floor_at_its_first_frame(detector, speech):
    silence = np.zeros(16000, dtype=np.int16)
    outs = await _run(detector, _frames(np.concatenate([silence, speech[:16000]])))
    started = next(o.record for o in outs if isinstance(o.record, TurnEvent))
    onset = started.turn_seq - 1  # the first voiced frame
    # after 50 frames of silence the clip starts (webrtcvad already hears its room tone); its first word ~0.26 s in
    assert 50 <= onset <= 50 + 16
    floor = detector.commit_floor(AUDIO_IN, 0)
    preroll_frames = detector.s.preroll_ms // 20
    assert floor is not None and onset - preroll_frames <= floor <= onset  # within the pre-roll before onset


async def test_a_call_whose_audio_stops_without_an_end_is_ended_as_ingress_lost(detector):
    from switchboard.records import CallEvent, CallEventKind
    from switchboard.topics import CALLS

    started = CallEvent("CA1", "MZ1", CallEventKind.CALL_STARTED, 1, "twilio", "clinic", "en-US", "node-0", 3)
    [o async for o in detector.handle(Incoming(started, Correlation(call_id="CA1"), CALLS, 0, 0, 0))]
    silence = np.zeros(FRAME * 5, dtype=np.int16)
    await _run(detector, _frames(silence))  # CA1 speaks, then its ingress node dies
    later = 1_000_000 + 20_000_000  # 20 s on, another call's audio still flows on this worker
    other = AudioFrame("CA2", 0, later, 16000, array_to_pcm16(silence[:FRAME]), 3)
    outs = [o async for o in detector.handle(Incoming(other, Correlation(call_id="CA2"), AUDIO_IN, 0, 99, 0))]
    ended = [o.record for o in outs if isinstance(o.record, CallEvent)]
    assert len(ended) == 1 and ended[0].call_id == "CA1"
    assert ended[0].kind is CallEventKind.CALL_ENDED and ended[0].reason == "ingress_lost"
    assert "CA1" not in detector.calls and "CA2" in detector.calls


def _records(audio: np.ndarray, record_ms: int, agent_turn: int | None = None):
    """The call's audio as ingress publishes it with longer records: ``seq`` is the record's first 20 ms frame."""
    block = 16 * record_ms
    for i in range(0, len(audio) - block + 1, block):
        seq = i // FRAME
        yield AudioFrame(
            "CA1", seq, 1_000_000 + seq * 20_000, 16000, array_to_pcm16(audio[i : i + block]), 3, agent_turn
        )


def _turns(outs: list) -> list[tuple]:
    return [
        (e.kind, e.turn_seq, e.speech_start_us, e.speech_end_us, e.cancelled_turn_seq)
        for e in (o.record for o in outs)
        if isinstance(e, TurnEvent)
    ]


def _speech(outs: list) -> dict[int, bytes]:
    """Each turn's audio as STT receives it, chunk after chunk."""
    audio: dict[int, bytes] = {}
    for c in (o.record for o in outs if isinstance(o.record, SpeechChunk)):
        audio[c.turn_seq] = audio.get(c.turn_seq, b"") + c.pcm
    return audio


@pytest.fixture(scope="module")
def two_turns() -> np.ndarray:
    """Two utterances (two clips) between silences: 1 s, clip, 1.5 s, clip, 1 s; a whole number of 100 ms."""
    other, _ = read_wav(SHARED_AUDIO / "librivox-0870.wav")
    first, _ = read_wav(SHARED_AUDIO / "librivox-0880.wav")
    audio = np.concatenate([np.zeros(16000), first, np.zeros(24000), other, np.zeros(16000)]).astype(np.int16)
    return audio[: len(audio) // 1600 * 1600]


@pytest.mark.parametrize("record_ms", [60, 100])
async def test_longer_records_give_the_same_turns_ids_end_times_and_audio_as_20_ms_records(
    detector, two_turns, record_ms
):
    settings = detector.s
    reference = await _run(TurnDetector(settings, vad.factory(settings)), _records(two_turns, 20))
    outs = await _run(detector, _records(two_turns, record_ms))
    assert [t[0] for t in _turns(reference)].count(TurnEventKind.END_OF_TURN) == 2
    assert _turns(outs) == _turns(reference)
    assert _speech(outs) == _speech(reference)  # the pre-roll included, frame for frame
    chunks = [o.record for o in outs if isinstance(o.record, SpeechChunk)]
    for turn in {c.turn_seq for c in chunks}:
        seqs = [c.seq for c in chunks if c.turn_seq == turn]
        assert seqs == list(range(len(seqs))) and [c.final for c in chunks if c.turn_seq == turn][-1]


async def test_a_turn_id_is_the_20_ms_frame_at_onset_even_mid_record(detector, speech):
    audio = np.concatenate([np.zeros(16000 + 320 * 2, dtype=np.int16), speech])  # onset falls inside a 100 ms record
    audio = audio[: len(audio) // 1600 * 1600]
    ids = {
        r: [t[1] for t in _turns(await _run(TurnDetector(detector.s, vad.factory(detector.s)), _records(audio, r)))]
        for r in (20, 100)
    }
    assert ids[20] and ids[100][0] == ids[20][0] and ids[20][0] % 5 != 1  # not a record boundary


@pytest.mark.parametrize("record_ms", [20, 60, 100])
async def test_barge_in_fires_once_after_200_ms_of_speech_whatever_the_record_size(detector, speech, record_ms):
    audio = speech[: len(speech) // 1600 * 1600]
    outs = await _run(detector, _records(audio, record_ms, agent_turn=0))
    barges = [t for t in _turns(outs) if t[0] is TurnEventKind.BARGE_IN]
    clears = [o for o in outs if isinstance(o.record, PlaybackCommand)]
    assert len(barges) == 1 and barges[0][4] == 0 and len(clears) == 1


async def test_a_record_that_is_not_a_whole_number_of_frames_carries_its_tail_to_the_next(detector, two_turns):
    reference = await _run(TurnDetector(detector.s, vad.factory(detector.s)), _records(two_turns, 20))
    block = 16 * 30  # 30 ms records: every other frame straddles two records
    records = (
        AudioFrame(
            "CA1", i // FRAME, 1_000_000 + i * 1_000_000 // 16000, 16000, array_to_pcm16(two_turns[i : i + block]), 3
        )
        for i in range(0, len(two_turns) - block + 1, block)
    )
    outs = await _run(detector, records)
    assert _turns(outs) == _turns(reference)
    assert _speech(outs) == _speech(reference)


async def test_an_open_turn_in_long_records_holds_the_commit_floor_within_its_preroll(detector, speech):
    audio = np.concatenate([np.zeros(16000, dtype=np.int16), speech[:16000]])
    outs = await _run(detector, _records(audio, 100))  # offset k holds frames 5k .. 5k+4
    onset = next(o.record for o in outs if isinstance(o.record, TurnEvent)).turn_seq - 1
    floor = detector.commit_floor(AUDIO_IN, 0)
    assert floor is not None and (onset - detector.s.preroll_ms // 20) // 5 <= floor <= onset // 5
