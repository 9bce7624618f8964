"""Smart Turn v3.2: does the caller's audio so far sound like a finished turn?

The model (BSD-2-Clause, by Daily) ships inside the ``pipecat-ai`` wheel, installed without its
dependencies. Nothing here imports ``pipecat`` (its ``__init__`` needs loguru and more): the ONNX
file is found by path through the package's import spec, which locates it without running it.

Calls are synchronous and CPU-bound (features ~5–25 ms, inference ~60–130 ms): the turns
processor runs them off the event loop with ``switchboard.inference.run_inference``. The session
is shared by every call of the worker (onnxruntime sessions are safe to run from several threads)
and takes a batch, so calls judged at the same moment can go in one pass.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from processors.turns.features import smart_turn_features

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"


def bundled_model_path() -> Path:
    """``smart-turn-v3.2-cpu.onnx`` inside the installed ``pipecat-ai`` wheel."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "pipecat-ai is not installed: it ships the Smart Turn model (pip install --no-deps pipecat-ai==1.14.0)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "audio" / "turn" / "smart_turn" / "data" / MODEL_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: this pipecat-ai release does not ship {MODEL_FILE}")
    return path


class SmartTurn:
    """Probability that a turn is complete, from the last 8 s of its audio (16 kHz)."""

    name = "smart-turn-v3.2"

    def __init__(self, path: str | Path | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One intra-op thread and no spinning: on a shared 2-core box more threads or spinning made
        # every model 3-4x slower under load (notes/speech-models.md); calls run in parallel instead.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.path = Path(path) if path else bundled_model_path()
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])

    def probability(self, samples_16k: np.ndarray) -> float:
        """P(turn complete) for one turn's audio so far: int16 or float in [-1, 1], mono, 16 kHz."""
        return self.probabilities([samples_16k])[0]

    def probabilities(self, turns: Sequence[np.ndarray]) -> list[float]:
        """P(turn complete) for several calls' turns in one model pass."""
        if not turns:
            return []
        features = np.stack([smart_turn_features(t) for t in turns])
        return self.judge_features(features)

    def judge_features(self, features: np.ndarray) -> list[float]:
        """The model alone, on (n, 80, 800) features: for timing features and inference apart."""
        (probs,) = self.session.run(["logits"], {"input_features": features.astype(np.float32, copy=False)})
        # the exported graph ends in a sigmoid: its "logits" are already probabilities
        return [float(p) for p in probs[:, 0]]
