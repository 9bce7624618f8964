"""The false-interruption guard of the turn detector (README "Interruptions"), on real speech, without Kafka.

Caller voice over the agent's reply first *pauses* it; it becomes a barge-in (BARGE_IN + clear) with enough voice or
words that are not backchannels; a backchannel, a cough or a burst with no transcript *resumes* it and that little
turn is not answered (END_OF_TURN reason ``backchannel``; STT closes its stream without a transcript)."""

import numpy as np
import pytest

from processors.turns import vad
from processors.turns.logic import TurnDetector
from processors.turns.profiles import ENGLISH, SPANISH, is_backchannel
from processors.turns.settings import TurnsSettings
from switchboard import metrics
from switchboard.audio import array_to_pcm16, read_wav
from switchboard.bus import Correlation
from switchboard.records import (
    AudioFrame,
    PlaybackCommand,
    PlaybackKind,
    SpeechChunk,
    Transcript,
    TranscriptKind,
    TurnEvent,
    TurnEventKind,
)
from switchboard.runner import Incoming
from switchboard.topics import AUDIO_IN, TRANSCRIPTS
from tests.conftest import SHARED_AUDIO

FRAME = 320  # 20 ms at 16 kHz
REPLY = 7  # the agent reply playing while the caller speaks


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, _ = read_wav(SHARED_AUDIO / "librivox-0880.wav")
    return samples


def _onset(samples: np.ndarray) -> int:
    """The first 20 ms frame of the clip loud enough to be speech."""
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    loud = np.sqrt((frames**2).mean(axis=1)) > 500
    return int(np.argmax(loud)) * FRAME


def _burst(speech: np.ndarray, ms: int) -> np.ndarray:
    """``ms`` of real speech from its onset, faded out over 20 ms (a short word's worth)."""
    start = _onset(speech)
    cut = speech[start : start + 16 * ms].astype(np.float64)
    cut[-FRAME:] *= np.linspace(1.0, 0.0, FRAME)
    return cut.astype(np.int16)


def _call(reply_s: float, caller: np.ndarray, after_s: float = 2.0) -> np.ndarray:
    """The reply has played ``reply_s`` when the caller's sound starts, then silence; a whole number of frames."""
    audio = np.concatenate([np.zeros(int(16000 * reply_s), np.int16), caller, np.zeros(int(16000 * after_s), np.int16)])
    return audio[: len(audio) // FRAME * FRAME]


class _Stt:
    """Stands in for STT's early transcript of each pause chunk (the text a real decode of that audio gives)."""

    def __init__(self, text: str | None) -> None:
        self.text = text
        self.audio: dict[int, int] = {}

    def early(self, chunk: SpeechChunk) -> Transcript | None:
        self.audio[chunk.turn_seq] = self.audio.get(chunk.turn_seq, 0) + len(chunk.pcm)
        if not chunk.pause or self.text is None:
            return None
        ms = self.audio[chunk.turn_seq] * 1000 // 32000
        return Transcript("CA1", chunk.turn_seq, TranscriptKind.EARLY, self.text, "en-US", ms, "test", 0)


async def _run(audio: np.ndarray, text: str | None, agent_turn: int | None = REPLY, settings=None) -> list:
    settings = settings or TurnsSettings(smart_turn=False)
    detector = TurnDetector(settings, vad.factory(settings))
    stt = _Stt(text)
    outs: list = []
    for offset, i in enumerate(range(0, len(audio), FRAME)):
        seq = i // FRAME
        frame = AudioFrame("CA1", seq, 1_000_000 + seq * 20_000, 16000, array_to_pcm16(audio[i : i + FRAME]), 3,
                           agent_turn)
        async for out in detector.handle(Incoming(frame, Correlation(call_id="CA1"), AUDIO_IN, 0, offset, 0)):
            outs.append(out)
            if isinstance(out.record, SpeechChunk) and (t := stt.early(out.record)) is not None:
                async for more in detector.handle(Incoming(t, Correlation(call_id="CA1"), TRANSCRIPTS, 0, offset, 0)):
                    outs.append(more)
    return outs


def _decisions(outs: list) -> list[tuple]:
    """What the guard decided, in order: playback commands and turn events (with an END_OF_TURN's reason)."""
    seen = []
    for r in (o.record for o in outs):
        if isinstance(r, PlaybackCommand):
            seen.append(("playback", r.kind.value, r.through_turn_seq))
        elif isinstance(r, TurnEvent):
            seen.append((r.kind.value, r.end_reason if r.kind is TurnEventKind.END_OF_TURN else r.cancelled_turn_seq))
    return seen


def _finals(outs: list) -> list[SpeechChunk]:
    return [o.record for o in outs if isinstance(o.record, SpeechChunk) and o.record.final]


def _untranscribed(outs: list) -> bool:
    """The turn's one final chunk says it takes no turn (STT then closes its stream and publishes no transcript)."""
    return [f.timings.end_reason for f in _finals(outs)] == ["backchannel"]


def _false(reason: str) -> float:
    return metrics.FALSE_INTERRUPTIONS.labels(reason)._value.get()


async def test_long_speech_over_a_reply_pauses_it_first_then_interrupts_it(speech):
    outs = await _run(_call(1.0, speech), text=None)
    kinds = [d[:2] for d in _decisions(outs)]
    assert kinds[:4] == [
        ("speech_started", None),
        ("playback", "pause"),
        ("barge_in", REPLY),
        ("playback", "clear"),
    ]
    commands = [o for o in outs if isinstance(o.record, PlaybackCommand)]
    assert all(o.partition == 3 for o in commands)  # the caller's reply partition, from the frames
    assert commands[0].record.through_turn_seq == commands[1].record.through_turn_seq  # the same replies
    # the pause came at ~80 ms of voice, the interruption at ~700 ms: the pause is what the caller's ear measures
    assert len(_finals(outs)) == 1  # the interruption is a turn STT transcribes and the agent answers


async def test_an_uh_huh_over_a_reply_resumes_it_and_is_not_answered(speech):
    before = _false("backchannel")
    outs = await _run(_call(1.0, _burst(speech, 300)), text="Uh-huh.")
    through = next(o.record.through_turn_seq for o in outs if isinstance(o.record, PlaybackCommand))
    assert _decisions(outs) == [
        ("speech_started", None),
        ("playback", "pause", through),
        ("playback", "resume", through),
        ("end_of_turn", "backchannel"),
    ]
    assert _untranscribed(outs)  # STT closes the turn without a transcript: nothing for the agent to answer
    assert _false("backchannel") == before + 1


async def test_a_short_word_that_is_not_a_backchannel_interrupts(speech):
    outs = await _run(_call(1.0, _burst(speech, 300)), text="Wait.")
    assert [d[:2] for d in _decisions(outs)] == [
        ("speech_started", None),
        ("playback", "pause"),
        ("barge_in", REPLY),
        ("playback", "clear"),
        ("end_of_turn", "timeout"),
    ]
    assert len(_finals(outs)) == 1


async def test_a_sound_without_words_resumes_as_no_words(speech):
    before = _false("no_words")
    outs = await _run(_call(1.0, _burst(speech, 300)), text="")
    assert [d[:2] for d in _decisions(outs)][1:] == [("playback", "pause"), ("playback", "resume"),
                                                      ("end_of_turn", "backchannel")]
    assert _false("no_words") == before + 1


async def test_no_transcript_in_time_resumes_after_the_documented_silence(speech):
    settings = TurnsSettings(smart_turn=False, resume_after_ms=600)
    before = _false("no_transcript")
    outs = await _run(_call(1.0, _burst(speech, 300)), text=None, settings=settings)
    assert [d[:2] for d in _decisions(outs)][1:] == [("playback", "pause"), ("playback", "resume"),
                                                      ("end_of_turn", "backchannel")]
    assert _untranscribed(outs)
    assert _false("no_transcript") == before + 1
    # the resume came 600 ms into the silence after the burst (counted in the caller's frames)
    resume_at = next(i for i, o in enumerate(outs) if isinstance(o.record, PlaybackCommand)
                     and o.record.kind is PlaybackKind.RESUME)
    assert resume_at > 0


async def test_voice_at_the_very_start_of_a_reply_does_not_pause_it(speech):
    # the reply's first frame and the caller's "okay" come together: the caller was answering the last reply
    outs = await _run(_call(0.1, _burst(speech, 300)), text="Okay.")
    assert _decisions(outs) == [("speech_started", None), ("end_of_turn", "backchannel")]
    assert _untranscribed(outs)


async def test_real_words_at_the_start_of_a_reply_still_interrupt_it(speech):
    outs = await _run(_call(0.1, _burst(speech, 300)), text="No, Saturday.")
    assert [d[:2] for d in _decisions(outs)][:3] == [
        ("speech_started", None),
        ("barge_in", REPLY),
        ("playback", "clear"),
    ]


async def test_an_uh_huh_while_the_agent_is_silent_is_an_ordinary_turn(speech):
    outs = await _run(_call(1.0, _burst(speech, 300)), text="Uh-huh.", agent_turn=None)
    assert [d[:2] for d in _decisions(outs)] == [("speech_started", None), ("end_of_turn", "timeout")]
    assert len(_finals(outs)) == 1


@pytest.mark.parametrize("text", ["Uh-huh.", "Wait."])
async def test_a_replay_of_the_same_frames_and_transcripts_decides_the_same(speech, text):
    audio = _call(1.0, _burst(speech, 300))
    first, second = await _run(audio, text), await _run(audio, text)
    assert _decisions(first) == _decisions(second)


def test_backchannels_are_words_of_the_calls_language():
    for text in ("Uh-huh.", "Mm-hmm", "yeah, okay", "Right.", "", "..."):
        assert is_backchannel(text, ENGLISH), text
    for text in ("Wait.", "yeah but Saturday", "No"):
        assert not is_backchannel(text, ENGLISH), text
    assert is_backchannel("Sí, claro.", SPANISH) and not is_backchannel("Espere", SPANISH)
