"""Whisper log-mel features in numpy, as Smart Turn v3 was trained on (no torch, no transformers).

Smart Turn's ``input_features`` are what ``transformers.WhisperFeatureExtractor(chunk_length=8)``
makes of the last 8 s at 16 kHz with ``do_normalize=True``: zero-padded on the left to 8 s, the
waveform scaled to zero mean and unit variance, a centred (reflect-padded) STFT with a 400-sample
periodic Hann window, hop 160, n_fft 400, the power spectrum through 80 Slaney mel filters
(0–8 kHz, area-normalised, as librosa and Whisper build them), log10 floored at 1e-10, clamped to
8 below its maximum, then (x + 4) / 4. The last STFT frame is dropped: 800 frames.

Why not reuse ``faster_whisper.feature_extractor.FeatureExtractor`` (numpy, installed): it is the
same log-mel (the tests check parity against it and against the copy pipecat vendors), but it
belongs to an optional STT engine's package, mutates its own state per call (``chunk_length``), so
it is not safe to share across inference threads, and does not do the waveform normalisation.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80
WINDOW_S = 8
N_SAMPLES = RATE * WINDOW_S  # 128 000
N_FRAMES = N_SAMPLES // HOP  # 800


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = 3.0 * hz / 200.0
    log = hz >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = 200.0 * mel / 3.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), hz)


def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = RATE) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular Slaney filters, each normalised to constant area."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), n_mels + 2))
    ramps = edges[:, None] - fft_hz[None, :]
    widths = np.diff(edges)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


_HANN = np.hanning(N_FFT + 1)[:-1]  # periodic, as torch.hann_window
_MEL = mel_filters()


def log_mel(audio: np.ndarray) -> np.ndarray:
    """(80, len // 160) Whisper log-mel of float audio at 16 kHz (no padding, no normalisation)."""
    x = np.asarray(audio, dtype=np.float64)
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP]  # no copy: a strided view
    power = np.abs(np.fft.rfft(frames * _HANN, axis=-1)) ** 2  # (frames, 201)
    mel = _MEL @ power[:-1].T  # drop the last frame, as Whisper does
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)


def last_window(samples: np.ndarray) -> np.ndarray:
    """The last 8 s as float32 in [-1, 1], zero-padded on the left (int16 or float input)."""
    x = np.asarray(samples)
    x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
    x = x[-N_SAMPLES:]
    return np.pad(x, (N_SAMPLES - len(x), 0)) if len(x) < N_SAMPLES else x


def smart_turn_features(samples: np.ndarray) -> np.ndarray:
    """Smart Turn's (80, 800) ``input_features`` for a turn's audio so far (16 kHz, any length)."""
    if np.ndim(samples) != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {np.shape(samples)}")
    x = last_window(samples)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)  # normalised over the padded window, as the model saw in training
    return log_mel(x)
