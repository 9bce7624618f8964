import audioop

import numpy as np
import pytest

from switchboard.audio import Resampler, mulaw_decode, mulaw_encode, resample, rms_dbfs


def _tone(rate: int, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_mulaw_decoding_matches_the_g711_reference():
    codes = bytes(range(256))
    assert np.array_equal(mulaw_decode(codes), np.frombuffer(audioop.ulaw2lin(codes, 2), dtype=np.int16))


def test_mulaw_round_trip_error_stays_within_one_quantisation_step():
    x = np.arange(-32768, 32767, 7, dtype=np.int16)
    y = mulaw_decode(mulaw_encode(x))
    step = np.maximum(8, np.abs(x.astype(int)) // 16)  # μ-law step grows with magnitude
    assert np.all(np.abs(y.astype(int) - x) <= step)


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (22050, 16000), (16000, 24000)])
def test_streaming_resampler_equals_whole_signal_resampling(src, dst):
    x = _tone(src)
    frame = src // 50
    r = Resampler(src, dst)
    streamed = np.concatenate([r.process(x[i : i + frame]) for i in range(0, len(x), frame)])
    assert np.array_equal(streamed, resample(x, src, dst))
    assert len(streamed) == len(x) * dst // src


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 48000), (8000, 24000)])
def test_integer_upsampling_takes_a_faster_path_with_the_same_result(src, dst):
    x = (np.random.default_rng(7).standard_normal(src * 2) * 6000).astype(np.int16)
    frame = src // 50
    fast, general = Resampler(src, dst), Resampler(src, dst)
    out_fast, out_general = [], []
    for i in range(0, len(x), frame):
        out_fast.append(fast.process(x[i : i + frame]))
        h = np.concatenate([general._history, x[i : i + frame].astype(np.float32)])
        out_general.append(general._polyphase(h, len(x[i : i + frame])))
    diff = np.abs(np.concatenate(out_fast).astype(int) - np.concatenate(out_general))
    assert diff.max() <= 1, "the same filter: only float rounding may differ"


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (22050, 16000)])
def test_resampling_keeps_the_level_of_an_in_band_tone(src, dst):
    y = resample(_tone(src), src, dst)
    assert abs(rms_dbfs(y[200:-200]) - rms_dbfs(_tone(src))) < 0.5


def test_downsampling_removes_tones_above_the_new_nyquist():
    y = resample(_tone(16000, hz=6000), 16000, 8000)
    assert rms_dbfs(y[200:-200]) < rms_dbfs(_tone(16000)) - 20
