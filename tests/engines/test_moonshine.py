"""Moonshine base-en, the offline STT default: its one-off conversion, and what it hears on real speech
sent through the phone path (16 kHz → 8 kHz → μ-law → 16 kHz), with the real model."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from processors.stt.main import create_engine
from processors.stt.moonshine import MoonshineEngine
from processors.stt.moonshine_convert import ROOT, ModelMissing, convert, model_dir, problems
from processors.stt.settings import SttSettings
from switchboard.audio import BUS_RATE, mulaw_decode, mulaw_encode, read_wav, resample
from switchboard.wer import normalise, wer
from tests.conftest import SHARED_AUDIO

pytestmark = pytest.mark.slow
CLIPS = sorted(SHARED_AUDIO.glob("*.wav"))


def phone_path(samples: np.ndarray, rate: int) -> np.ndarray:
    """What a caller's audio looks like on the bus after Twilio: narrowband μ-law, back at the bus rate."""
    narrow = resample(resample(samples, rate, BUS_RATE), BUS_RATE, 8000)
    return resample(mulaw_decode(mulaw_encode(narrow)), 8000, BUS_RATE)


@pytest.fixture(scope="module")
def converted(moonshine: MoonshineEngine) -> Path:
    """The model as scripts/setup.sh leaves it (the ``moonshine`` fixture converts only if set-up was skipped)."""
    return model_dir()


@pytest.fixture(scope="module")
def heard(moonshine: MoonshineEngine) -> dict[str, str]:
    """Each clip's transcript, one turn per clip, through the engine's streaming interface in 20 ms frames."""

    async def one(path: Path) -> str:
        samples, rate = read_wav(path)
        stream = moonshine.open("en-US", BUS_RATE)
        audio = phone_path(samples, rate)
        for i in range(0, len(audio), BUS_RATE // 50):
            assert await stream.push(audio[i : i + BUS_RATE // 50]) == []
        result = await stream.finish()
        assert result.final and result.language == "en-US"
        assert result.audio_ms == len(audio) * 1000 // BUS_RATE
        return result.text

    async def every() -> dict[str, str]:
        return {p.name: await one(p) for p in CLIPS}

    return asyncio.run(every())


def _reference(clip: str) -> str:
    return (SHARED_AUDIO / clip).with_suffix(".txt").read_text()


@pytest.mark.parametrize("clip", [p.name for p in CLIPS])
def test_each_clip_through_the_phone_path_is_heard_within_15_percent_word_error(heard, clip):
    assert wer(_reference(clip), heard[clip]) <= 0.15, heard[clip]


def test_word_error_over_all_clips_is_at_most_5_percent(heard):
    words = {clip: len(normalise(_reference(clip))) for clip in heard}
    errors = sum(wer(_reference(clip), text) * words[clip] for clip, text in heard.items())
    assert errors / sum(words.values()) <= 0.05, heard


def test_the_ill_disposed_clip_that_whisper_tiny_mishears_is_heard_right(heard):
    assert "ill disposed" in " ".join(normalise(heard["librivox-0880.wav"])), heard["librivox-0880.wav"]


@pytest.mark.parametrize("samples", [0, 160, 800])
async def test_an_empty_or_very_short_turn_gives_an_empty_transcript(moonshine, samples):
    stream = moonshine.open("en-US", BUS_RATE)
    if samples:
        await stream.push(np.full(samples, 1200, dtype=np.int16))
    result = await stream.finish()
    assert result.text == "" and result.final and result.audio_ms == samples * 1000 // BUS_RATE


async def test_a_second_of_silence_gives_an_empty_transcript(moonshine):
    stream = moonshine.open("en-US", BUS_RATE)
    await stream.push(np.zeros(BUS_RATE, dtype=np.int16))
    assert (await stream.finish()).text == ""


async def test_turns_decoded_at_once_read_the_same_as_one_by_one(moonshine):
    audios = []
    for path in CLIPS:
        samples, rate = read_wav(path)
        audios.append(phone_path(samples, rate)[: 3 * BUS_RATE])  # 3 s each keeps this quick

    async def decode(audio: np.ndarray) -> str:
        stream = moonshine.open("en-US", BUS_RATE)
        await stream.push(audio)
        return (await stream.finish()).text

    one_by_one = [await decode(a) for a in audios]
    batched_before = batched_turns()
    at_once = await asyncio.gather(*(decode(a) for a in audios + audios))
    assert list(at_once) == one_by_one + one_by_one
    assert all(one_by_one), "every clip's first 3 s hold words"
    assert batched_turns() > batched_before, "turns that waited for a thread shared a batch"


def batched_turns() -> float:
    """Turns Moonshine decoded in a batch of more than one, so far in this process."""
    count = REGISTRY.get_sample_value("switchboard_stt_batch_turns_count", {"engine": "moonshine"}) or 0.0
    alone = REGISTRY.get_sample_value("switchboard_stt_batch_turns_bucket", {"engine": "moonshine", "le": "1.0"}) or 0.0
    return count - alone


def test_turns_of_different_lengths_decoded_as_one_batch_read_as_each_does_alone(moonshine):
    """The padding of the shorter turns is masked: a batch gives every turn the words it gets alone, whatever else
    is in the batch (punctuation may differ: the int8 quantisation of the activations is scaled over the whole
    batch); a turn too short for a word still gives ""."""
    audios = [np.zeros(800, dtype=np.int16)]
    for path in CLIPS:
        samples, rate = read_wav(path)
        speech = phone_path(samples, rate)
        audios += [speech[: int(len(speech) * share)] for share in (1.0, 0.55, 0.3)]
    alone = [moonshine.model.transcribe(audio) for audio in audios]
    assert alone[0] == "" and all(alone[1:])
    words = [normalise(text) for text in alone]
    assert [normalise(text) for text in moonshine.model.transcribe_batch(audios)] == words
    assert [normalise(text) for text in moonshine.model.transcribe_batch(audios[::-1])] == words[::-1]


async def test_a_cancelled_turn_forgets_its_audio(moonshine):
    stream = moonshine.open("en-US", BUS_RATE)
    samples, rate = read_wav(CLIPS[0])
    await stream.push(phone_path(samples, rate))
    await stream.cancel()
    assert (await stream.finish()).text == ""


def test_audio_at_another_rate_is_refused(moonshine):
    with pytest.raises(ValueError, match="16000 Hz"):
        moonshine.open("en-US", 8000)


def test_conversion_is_idempotent_and_its_manifest_catches_a_corrupted_or_missing_file(converted, tmp_path):
    target = tmp_path / "moonshine-base-en"
    shutil.copytree(converted, target)
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    assert convert(target) is False, "an intact conversion is left alone"
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before

    with (target / "decoder_next.onnx").open("r+b") as f:  # one flipped byte, same size
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    (target / "tokenizer.bin").unlink()
    assert problems(target) == ["decoder_next.onnx does not match its hash in the manifest", "tokenizer.bin is missing"]
    with pytest.raises(ModelMissing, match=r"run scripts/setup\.sh"):
        MoonshineEngine(str(tmp_path))

    assert convert(target) is True, "a corrupt conversion is redone"
    assert problems(target) == []
    assert not [p for p in tmp_path.iterdir() if p.name != "moonshine-base-en"], "no work files left behind"


def test_without_the_converted_model_the_stt_service_refuses_to_start_and_says_how_to_fix_it(tmp_path):
    env = {**os.environ, "SWITCHBOARD_MODELS_DIR": str(tmp_path), "SWITCHBOARD_STT_ENGINE": "moonshine"}
    done = subprocess.run([sys.executable, "-m", "processors.stt.main"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "run scripts/setup.sh" in done.stderr and "Traceback" not in done.stderr + done.stdout


def test_moonshine_is_the_default_engine_and_whisper_and_azure_are_selectable(converted, monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_STT_ENGINE", raising=False)
    assert SttSettings().stt_engine == "moonshine"
    assert create_engine(SttSettings()).name == "moonshine"
    assert create_engine(SttSettings(stt_engine="whisper")).name == "whisper"
    cloud = SttSettings(stt_engine="azure", azure_speech_key="not-a-key", azure_speech_region="westeurope")
    azure = create_engine(cloud)
    assert (azure.name, azure.offline.name) == ("azure", "moonshine")
    with pytest.raises(ValueError, match="moonshine, whisper, azure"):
        create_engine(SttSettings(stt_engine="vosk"))
