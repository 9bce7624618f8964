"""Moonshine base-en (from ``moonshine-cpp``, converted once by ``moonshine_convert``): the offline STT default.

Three onnxruntime sessions: the encoder (variable length, so a short turn is cheap), the
decoder's first step (no KV cache; it also computes the cross-attention keys and values) and its
later steps (fed back the self-attention cache; the cross-attention entries of the first step
are reused unchanged). Greedy decoding, capped in tokens per second of audio so a repeating
decode cannot run away.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from processors.stt.engine import WholeTurnStream
from processors.stt.moonshine_convert import model_dir, require

logger = logging.getLogger(__name__)

RATE = 16_000
START, END = 1, 2  # <s>, </s>
BYTE_TOKENS = range(3, 3 + 256)  # byte fallback: token 3 + b stands for the raw byte b
# Speech runs at ~3 words (~4–5 tokens) a second; 6.5 a second plus a few leaves room for digits
# and spelled-out names, and stops a decode stuck repeating itself within a second or so of audio.
TOKENS_PER_SECOND = 6.5
EXTRA_TOKENS = 8
# The encoder needs ~56 ms to produce a single frame; under 100 ms a turn holds no word.
MIN_SAMPLES = RATE // 10


def read_tokenizer(path: Path) -> list[bytes]:
    """``tokenizer.bin``: one entry per token id, each a length byte then that many bytes (UTF-8)."""
    data = path.read_bytes()
    tokens, i = [], 0
    while i < len(data):
        n = data[i]
        tokens.append(data[i + 1 : i + 1 + n])
        i += 1 + n
    return tokens


class MoonshineModel:
    """The sessions and the tokenizer; ``transcribe`` is blocking and safe to call from several threads."""

    def __init__(self, directory: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        require(directory)
        options = ort.SessionOptions()
        # One thread per session and no spinning: under load, two spinning threads per session
        # made each decode 3–4× slower. Parallelism comes from the inference pool instead.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")

        def session(name: str) -> ort.InferenceSession:
            return ort.InferenceSession(str(directory / name), options, providers=["CPUExecutionProvider"])

        self.encoder = session("encoder.onnx")
        self.first = session("decoder_first.onnx")
        self.next = session("decoder_next.onnx")
        self.first_outputs = [o.name for o in self.first.get_outputs()]
        self.next_inputs = {i.name for i in self.next.get_inputs()}
        self.next_outputs = [o.name for o in self.next.get_outputs()]
        self.tokens = read_tokenizer(directory / "tokenizer.bin")

    def max_tokens(self, samples: int) -> int:
        return int(samples / RATE * TOKENS_PER_SECOND) + EXTRA_TOKENS

    def transcribe(self, audio: np.ndarray) -> str:
        """16 kHz int16 samples → text (punctuated, digits as digits); "" for a turn too short to hold a word."""
        if len(audio) < MIN_SAMPLES:
            return ""
        wall, cpu = time.perf_counter(), time.thread_time()
        x = (audio.astype(np.float32) / 32768.0)[None, :]
        [hidden] = self.encoder.run(["last_hidden_state"], {"input_values": x})
        first = dict(zip(self.first_outputs, self.first.run(None, {
            "input_ids": np.array([[START]], dtype=np.int64), "encoder_hidden_states": hidden,
        }), strict=True))
        cache = {name.replace("present", "past_key_values"): value for name, value in first.items()
                 if name != "logits"}
        token = int(first["logits"][0, -1].argmax())
        ids: list[int] = []
        cap = self.max_tokens(len(audio))
        while token != END and len(ids) < cap:
            ids.append(token)
            feed = {name: cache[name] for name in self.next_inputs if name != "input_ids"}
            feed["input_ids"] = np.array([[token]], dtype=np.int64)
            step = dict(zip(self.next_outputs, self.next.run(None, feed), strict=True))
            for name, value in step.items():  # only the self-attention entries change after the first step
                if name != "logits":
                    cache[name.replace("present", "past_key_values")] = value
            token = int(step["logits"][0, -1].argmax())
        if len(ids) >= cap:
            logger.warning("moonshine hit its token cap", extra={"fields": {"tokens": cap, "samples": len(audio)}})
        # Wall against CPU time tells a slow decode from a starved one (a busy core, a long pool queue).
        logger.debug("decoded", extra={"fields": {"audio_ms": len(audio) * 1000 // RATE, "tokens": len(ids),
                                                  "ms": round((time.perf_counter() - wall) * 1000),
                                                  "cpu_ms": round((time.thread_time() - cpu) * 1000)}})
        return self.detokenize(ids)

    def detokenize(self, ids: list[int]) -> str:
        # Ids past the vocabulary (the logits are padded to 32768) and the specials carry no text.
        pieces = b"".join(self.tokens[t] for t in ids if END < t < len(self.tokens))
        return pieces.decode("utf-8", errors="replace").replace("\u2581", " ").strip()


class MoonshineEngine:
    name = "moonshine"

    def __init__(self, models_dir: str = "", threads: int = 1) -> None:
        self.model = MoonshineModel(model_dir(models_dir), threads)
        # One decode at start-up: onnxruntime's first run of each session allocates and pages in the weights
        # (seconds on a busy box), which the first caller's turn would otherwise pay.
        self.model.transcribe(np.zeros(RATE, dtype=np.int16))

    def open(self, language: str, sample_rate: int) -> WholeTurnStream:
        if sample_rate != RATE:
            raise ValueError(f"moonshine needs {RATE} Hz audio, got {sample_rate}")
        return WholeTurnStream(self.model.transcribe, language, sample_rate, MIN_SAMPLES)
