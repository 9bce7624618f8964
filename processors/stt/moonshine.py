"""Moonshine base-en (from ``moonshine-cpp``, converted once by ``moonshine_convert``): the offline STT default.

Three onnxruntime sessions: the encoder (variable length, so a short turn is cheap), the
decoder's first step (no KV cache; it also computes the cross-attention keys and values) and its
later steps (fed back the self-attention cache; the cross-attention entries of the first step
are reused unchanged). Greedy decoding, capped in tokens per second of audio so a repeating
decode cannot run away. Turns that end together are decoded as one batch (``batching.BatchDecoder``): the
later-step decoder takes an attention bias that masks each turn's padding (``moonshine_convert``, step 5 of its recipe).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from processors.stt.batching import BatchDecoder
from processors.stt.engine import WholeTurnStream
from processors.stt.moonshine_convert import ENCODER_BIAS, model_dir, require

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
        return self.transcribe_batch([audio])[0]

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[str]:
        """Several turns at once, each transcribed as ``transcribe`` would alone (the same words on the clips of
        ``tests/engines/test_moonshine.py``; punctuation may differ, as the int8 quantisation of the activations is
        scaled over the whole batch).

        Each turn is encoded on its own (the encoder has no mask, and is a third of the work); the decoder's later
        steps, two thirds of it and bound by reading the weights, run for the whole batch at once.
        """
        texts = [""] * len(audios)
        worded = [i for i, audio in enumerate(audios) if len(audio) >= MIN_SAMPLES]
        if worded:
            for i, ids in zip(worded, self._decode([audios[i] for i in worded]), strict=True):
                texts[i] = self.detokenize(ids)
        return texts

    def _start(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        """Encode one turn and run the decoder's first step: its logits and its KV cache (``present.*``)."""
        x = (audio.astype(np.float32) / 32768.0)[None, :]
        [hidden] = self.encoder.run(["last_hidden_state"], {"input_values": x})
        return dict(zip(self.first_outputs, self.first.run(None, {
            "input_ids": np.array([[START]], dtype=np.int64), "encoder_hidden_states": hidden,
        }), strict=True))

    def _decode(self, audios: list[np.ndarray]) -> list[list[int]]:
        wall, cpu = time.perf_counter(), time.thread_time()
        firsts = [self._start(audio) for audio in audios]
        cache, bias = _batch_cache(firsts)
        tokens = [int(first["logits"][0, -1].argmax()) for first in firsts]
        caps = [self.max_tokens(len(audio)) for audio in audios]
        ids: list[list[int]] = [[] for _ in audios]
        rows = list(range(len(audios)))  # the turn each row of the batch decodes
        while running := [r for r, turn in enumerate(rows) if tokens[turn] != END and len(ids[turn]) < caps[turn]]:
            # A finished row keeps being fed (its output ignored) until half the rows are done: dropping rows
            # copies the whole cache, so it happens at most log2(batch) times.
            if len(running) <= len(rows) // 2:
                cache = {name: value[running] for name, value in cache.items()}
                bias, rows = bias[running], [rows[r] for r in running]
                running = list(range(len(rows)))
            for r in running:
                ids[rows[r]].append(tokens[rows[r]])
            feed = {name: cache[name] for name in self.next_inputs if name not in ("input_ids", ENCODER_BIAS)}
            feed["input_ids"] = np.array([[tokens[turn]] for turn in rows], dtype=np.int64)
            feed[ENCODER_BIAS] = bias
            step = dict(zip(self.next_outputs, self.next.run(None, feed), strict=True))
            for name, value in step.items():  # only the self-attention entries change after the first step
                if name != "logits":
                    cache[name.replace("present", "past_key_values")] = value
            chosen = step["logits"][:, -1].argmax(-1)
            for r in running:
                tokens[rows[r]] = int(chosen[r])
        for audio, turn_ids, cap in zip(audios, ids, caps, strict=True):
            if len(turn_ids) >= cap:
                logger.warning("moonshine hit its token cap", extra={"fields": {"tokens": cap, "samples": len(audio)}})
        # Wall against CPU time tells a slow decode from a starved one (a busy core, a long pool queue).
        logger.debug("decoded", extra={"fields": {
            "turns": len(audios), "audio_ms": sum(len(a) for a in audios) * 1000 // RATE,
            "tokens": sum(len(t) for t in ids), "ms": round((time.perf_counter() - wall) * 1000),
            "cpu_ms": round((time.thread_time() - cpu) * 1000)}})
        return ids

    def detokenize(self, ids: list[int]) -> str:
        # Ids past the vocabulary (the logits are padded to 32768) and the specials carry no text.
        pieces = b"".join(self.tokens[t] for t in ids if END < t < len(self.tokens))
        return pieces.decode("utf-8", errors="replace").replace("\u2581", " ").strip()


def _batch_cache(firsts: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The first steps' KV caches as one batch (``past_key_values.*``), and the bias that masks the padding.

    Turns have different numbers of encoder frames: the cross-attention keys and values are padded with zeros
    to the longest, and ``ENCODER_BIAS`` is -inf over the padding, so a padded frame gets no attention at all.
    """
    frames = [first["present.0.encoder.key"].shape[2] for first in firsts]
    longest = max(frames)
    cache = {}
    for name in firsts[0]:
        if name == "logits":
            continue
        parts = [first[name] for first in firsts]
        if ".encoder." in name:
            parts = [np.pad(p, ((0, 0), (0, 0), (0, longest - p.shape[2]), (0, 0))) if p.shape[2] < longest else p
                     for p in parts]
        cache[name.replace("present", "past_key_values")] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    bias = np.zeros((len(firsts), 1, 1, longest), dtype=np.float32)
    for row, n in enumerate(frames):
        bias[row, ..., n:] = -np.inf
    return cache, bias


class MoonshineEngine:
    name = "moonshine"

    def __init__(self, models_dir: str = "", threads: int = 1, max_batch: int = 8) -> None:
        self.model = MoonshineModel(model_dir(models_dir), threads)
        self.decoder = BatchDecoder(self.model.transcribe_batch, max_batch, self.name)
        # One decode at start-up: onnxruntime's first run of each session allocates and pages in the weights
        # (seconds on a busy box), which the first caller's turn would otherwise pay.
        self.model.transcribe(np.zeros(RATE, dtype=np.int16))

    def open(self, language: str, sample_rate: int) -> WholeTurnStream:
        if sample_rate != RATE:
            raise ValueError(f"moonshine needs {RATE} Hz audio, got {sample_rate}")
        return WholeTurnStream(self.decoder, language, sample_rate, MIN_SAMPLES)
