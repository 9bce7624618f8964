"""A Twilio caller's 20 ms μ-law frames are decoded a record at a time (ingress/twilio/uplink.py), and the audio
that reaches the bus is exactly what decoding each frame on its own gave."""

from __future__ import annotations

import numpy as np

from ingress.twilio.uplink import Uplink
from switchboard.audio import BUS_RATE, Resampler, mulaw_decode

FRAME = 160  # μ-law bytes in one 20 ms Twilio frame


def frames(n: int, seed: int = 7) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, FRAME, dtype=np.uint8).tobytes() for _ in range(n)]


def test_frames_come_back_a_record_at_a_time_with_the_first_frames_arrival() -> None:
    uplink = Uplink(record_ms=60)
    got = [uplink.push(f, arrived_us=1000 + 20_000 * i) for i, f in enumerate(frames(6))]
    assert [g is None for g in got] == [True, True, False, True, True, False]
    first, second = got[2], got[5]
    assert first is not None and second is not None
    assert len(first[0]) == len(second[0]) == 960  # 60 ms at 16 kHz
    assert (first[1], second[1]) == (1000, 61_000)
    assert uplink.waiting_bytes == 0


def test_gathered_audio_is_sample_for_sample_what_frame_by_frame_decoding_gave() -> None:
    audio = frames(50)
    one_by_one = Resampler(8000, BUS_RATE)
    expected = np.concatenate([one_by_one.process(mulaw_decode(f)) for f in audio])
    uplink = Uplink(record_ms=60)
    parts = [r[0] for f in audio if (r := uplink.push(f, 0)) is not None]
    tail = uplink.flush()
    assert tail is not None  # 50 frames: 16 records and 2 frames left over
    got = np.concatenate([*parts, tail[0]])
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)


def test_flush_hands_over_what_gathered_and_then_nothing() -> None:
    uplink = Uplink(record_ms=100)
    assert uplink.flush() is None
    assert uplink.push(frames(1)[0], 5) is None
    assert uplink.waiting_bytes == FRAME
    tail = uplink.flush()
    assert tail is not None and len(tail[0]) == 320 and tail[1] == 5
    assert uplink.flush() is None


def test_payloads_of_any_length_gather_until_a_record_is_complete() -> None:
    uplink = Uplink(record_ms=20)
    assert uplink.push(b"\xff" * 100, 1) is None
    assert uplink.push(b"", 2) is None  # an empty payload is no audio, and no arrival
    out = uplink.push(b"\xff" * 100, 3)
    assert out is not None and len(out[0]) == 400 and out[1] == 1
