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
