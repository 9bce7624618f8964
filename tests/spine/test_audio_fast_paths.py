"""The ingress's per-frame audio fast paths (switchboard/audio.py) give what the general code gives: μ-law encoding
by table equals the G.711 arithmetic for every int16 sample, and integer down-sampling (16 → 8 kHz, every agent frame
played to a Twilio caller) equals the general polyphase path, frame by frame, up to float rounding."""

from __future__ import annotations

import numpy as np
import pytest

from switchboard.audio import Resampler, _mulaw_encode_arith, mulaw_encode


def test_mulaw_encoding_by_table_equals_the_arithmetic_for_every_int16_sample() -> None:
    every = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    assert mulaw_encode(every) == _mulaw_encode_arith(every)


def test_mulaw_encoding_of_wider_samples_still_clips_as_g711() -> None:
    wide = np.array([-70000, -32768, 0, 32767, 70000], dtype=np.int32)
    assert mulaw_encode(wide) == _mulaw_encode_arith(wide)


@pytest.mark.parametrize(("src", "dst"), [(16000, 8000), (48000, 16000), (24000, 8000)])
def test_integer_down_sampling_takes_a_faster_path_with_the_same_result(src: int, dst: int) -> None:
    x = (np.random.default_rng(11).standard_normal(src * 2) * 6000).astype(np.int16)
    frame = src // 50 + 3  # frames that do not divide the ratio: the phase carries over between calls
    fast, general = Resampler(src, dst), Resampler(src, dst)
    out_fast, out_general = [], []
    for i in range(0, len(x), frame):
        chunk = x[i : i + frame]
        out_fast.append(fast.process(chunk))
        h = np.concatenate([general._history, chunk.astype(np.float32)])
        out_general.append(general._polyphase(h, len(chunk)))
    a, b = np.concatenate(out_fast), np.concatenate(out_general)
    assert len(a) == len(b)
    assert np.abs(a.astype(int) - b).max() <= 1, "the same filter: only float rounding may differ"


def test_resamplers_share_their_filter_taps_read_only() -> None:
    a, b = Resampler(8000, 16000), Resampler(8000, 16000)
    assert a._table is b._table and not a._table.flags.writeable
