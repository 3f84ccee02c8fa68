"""Faster graph variants (int8 for CPUs, fp16 for GPUs), each admitted only through a
parity gate against the float32 graph.

int8 is ONNX Runtime static quantization in QDQ form: uint8 activations (the VNNI path of
x86 CPUs), per-channel int8 weights, MinMax ranges from the bundle's own good images.
Only convolutions (with their ReLUs) are quantized; the map arithmetic after them
(squared differences, channel sums) stays float32, because ranges measured on good parts
would clip exactly the large differences that defects produce.

The gate runs both graphs on the same images and records the largest map difference,
the verdicts that flip at the bundle's threshold and, with defective images, the change
in image AUROC. A variant that flips any verdict is refused unless the caller overrides.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_sdk.errors import EdgeADError, EngineError, require
from edge_sdk.runtime.bundle import Bundle, sha256_hex, write_bundle
from edge_sdk.runtime.engine import Engine, EngineOptions
from edge_sdk.runtime.manifest import GraphFile
from edge_sdk.runtime.preprocess import to_model_input
from edge_sdk.runtime.scoring import MapScorer
from edge_sdk.statistics import auroc

log = logging.getLogger(__name__)

VariantKind = Literal["int8", "fp16"]


class ParityError(EdgeADError):
    """A variant changed verdicts (or maps) beyond what the gate allows."""


def _batches(
    images: Sequence[np.ndarray], hw: tuple[int, int], resize: str, batch: int = 1
) -> Iterator[np.ndarray]:
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        buf = np.zeros((len(chunk), 3, *hw), np.uint8)
        for k, image in enumerate(chunk):
            to_model_input(image, buf[k], resize=resize)
        yield buf


def quantize_int8(
    graph: bytes,
    images: Sequence[np.ndarray],
    *,
    input_name: str = "image",
    hw: tuple[int, int] = (256, 256),
    resize: str = "area",
) -> bytes:
    """The int8 QDQ graph, calibrated (MinMax) on `images` (good parts), with
    :data:`ACTIVATION_HEADROOM` above the ranges they show."""
    quant: Any = require("onnxruntime.quantization", extra="train", feature="int8 quantization")
    require("onnx", extra="train", feature="int8 quantization")

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(_batches(images, hw, resize))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory(prefix="edge-ad-int8-") as tmp:
        src, prep, dst = (Path(tmp) / n for n in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        src.write_bytes(graph)
        quant.shape_inference.quant_pre_process(str(src), str(prep), skip_symbolic_shape=True)
        quant.quantize_static(
            str(prep),
            str(dst),
            Reader(),
            quant_format=quant.QuantFormat.QDQ,
            # Relu with its Conv: the quantizer folds it into the Conv's output range, and
            # ONNX Runtime runs the pair as one QLinearConv (measured: 232 ms vs 327 ms for
            # EfficientAD-S with Relu left in float, same run, 2 cores).
            op_types_to_quantize=["Conv", "Relu"],
            per_channel=True,
            activation_type=quant.QuantType.QUInt8,
            weight_type=quant.QuantType.QInt8,
            calibrate_method=quant.CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        return widen_activation_ranges(dst.read_bytes(), ACTIVATION_HEADROOM)


# Calibration sees good parts only, and anomalies are exactly what drives activations past
# the ranges good parts show: clipped there, a defect's score drops (an escape). Widening
# every activation range this much costs a little resolution and removes most of it: on
# magnetic-tile test images (benchmarks/variant_flips.py) the largest score change against
# float32 fell from 0.058 to 0.013 of the normalised scale, the mean stayed at 0.002.
ACTIVATION_HEADROOM = 1.5


def widen_activation_ranges(graph: bytes, headroom: float) -> bytes:
    """Scale every activation's quantization step by `headroom` (zero points kept, so each
    range grows about zero); the uint8 image itself gets the exact step 1, zero point 0.

    A convolution's int32 bias is quantized with its input's step times its weight's, and
    ONNX Runtime fuses the QDQ pattern into one QLinearConv only while that holds (without
    it: 4x slower and less exact, measured), so each bias is requantized to match."""
    onnx: Any = require("onnx", extra="train", feature="int8 quantization")
    from onnx import numpy_helper

    model = onnx.load_from_string(graph)
    graph_inputs = {i.name for i in model.graph.input}
    cast_of_input = {
        n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] in graph_inputs
    }
    inits = {i.name: i for i in model.graph.initializer}
    factor: dict[str, float] = {}  # activation scale name -> new step / old step
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[1] in factor:
            continue  # a scale shared by several nodes is widened once
        scale, zero = inits[node.input[1]], inits[node.input[2]]
        old = numpy_helper.to_array(scale).astype(np.float32)
        if node.input[0] in cast_of_input:
            new = np.ones_like(old)
            zero.CopyFrom(
                numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(zero)), zero.name)
            )
        else:
            new = old * np.float32(headroom)
        factor[node.input[1]] = float(np.mean(new / old))
        scale.CopyFrom(numpy_helper.from_array(new, scale.name))
    producer = {n.output[0]: n for n in model.graph.node}
    for conv in (n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2):
        x, b = producer.get(conv.input[0]), producer.get(conv.input[2])
        if x is None or b is None or "DequantizeLinear" not in (x.op_type, b.op_type):
            continue
        f = factor.get(x.input[1], 1.0)
        b_scale, b_values = inits[b.input[1]], inits[b.input[0]]
        new_scale = numpy_helper.to_array(b_scale) * np.float32(f)
        values = np.round(numpy_helper.to_array(b_values) / f).astype(np.int32)
        b_scale.CopyFrom(numpy_helper.from_array(new_scale.astype(np.float32), b_scale.name))
        b_values.CopyFrom(numpy_helper.from_array(values, b_values.name))
    return bytes(model.SerializeToString())


# The layers that run in fp16; everything else (the squared teacher-student and
# autoencoder differences, their channel sums, the decoder's Resize) stays float32: a sum
# of 384 squared differences is where fp16 loses bits, and the large differences that
# defects produce would overflow it (65504) before the division by 384. On the CPU, whose
# kernels widen fp16 internally, both splits score alike (trained magnetic-tile S: largest
# map difference 0.00063); on a GPU that is up to the provider's kernels.
FP16_OPS = frozenset({"Conv", "Relu", "AveragePool", "MaxPool"})


def convert_fp16(graph: bytes) -> bytes:
    """The fp16 graph for GPUs: the convolutions in fp16, the map arithmetic after them in
    float32 (see :data:`FP16_OPS`); the uint8 input and float32 outputs are kept."""
    onnx: Any = require("onnx", extra="train", feature="fp16 conversion")
    f16: Any = require("onnxruntime.transformers.float16", extra="train", feature="fp16 conversion")
    model = onnx.load_from_string(graph)
    keep_fp32 = sorted({n.op_type for n in model.graph.node} - FP16_OPS)
    originals = {i.name: i for i in model.graph.initializer}  # before conversion
    converted = f16.convert_float_to_float16(
        onnx.load_from_string(graph), keep_io_types=True, op_block_list=keep_fp32
    )
    return bytes(drop_fp16_round_trips(converted, originals).SerializeToString())


def drop_fp16_round_trips(model: Any, originals: dict[str, Any]) -> Any:
    """Remove each Cast(fp16) -> Cast(fp32) pair between two float32 nodes (in place), and
    give float32 nodes their constants in float32 again (`originals`: the float32 graph's
    initializers by name).

    The converter casts every kept-float32 node's output to fp16 and back before the next
    kept node, which would round the squared differences and their sums to fp16 anyway
    (and overflow them); without the pair, float32 flows straight through. It also stores
    the constants of kept nodes (the 1/384 of the channel mean, say) in fp16."""
    from onnx import TensorProto

    inits = {i.name for i in model.graph.initializer}
    widened = [
        n
        for n in model.graph.node
        if n.op_type == "Cast"
        and n.input[0] in inits
        and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)
        and n.input[0] in originals
        and originals[n.input[0]].data_type == TensorProto.FLOAT
    ]
    for node in widened:
        restored = model.graph.initializer.add()
        restored.CopyFrom(originals[node.input[0]])
        restored.name = node.output[0]
        model.graph.node.remove(node)
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    outputs = {o.name for o in model.graph.output}

    def cast_to(node: Any) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((int(a.i) for a in node.attribute if a.name == "to"), None)

    rename: dict[str, str] = {}
    dropped: list[Any] = []
    for node in nodes:
        first = producer.get(node.input[0]) if node.input else None
        if cast_to(node) != TensorProto.FLOAT or first is None:
            continue
        if cast_to(first) != TensorProto.FLOAT16 or first.input[0] not in producer:
            continue
        source = producer[first.input[0]]
        if source.op_type in FP16_OPS or cast_to(source) == TensorProto.FLOAT16:
            continue  # an fp16 value: this Cast is a real widening
        if node.output[0] in outputs:
            node.op_type, node.input[0] = "Identity", first.input[0]
            del node.attribute[:]
        else:
            rename[node.output[0]] = first.input[0]
            dropped.append(node)
    for node in dropped:
        model.graph.node.remove(node)
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    used = {i for n in model.graph.node for i in n.input} | outputs
    for node in [n for n in model.graph.node if cast_to(n) == TensorProto.FLOAT16]:
        if node.output[0] not in used:
            model.graph.node.remove(node)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    _sort_topologically(model.graph)
    return model


def _sort_topologically(graph: Any) -> None:
    """Order the nodes so each comes after its inputs' producers, as ONNX requires (the
    converter appends its casts at the end, which only ONNX Runtime forgives)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        runnable = [n for n in pending if all(i in ready for i in n.input)]
        if not runnable:
            raise EdgeADError("fp16 conversion produced a graph with a cycle")
        for node in runnable:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if n not in runnable]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def parity(
    bundle: Bundle,
    reference: Engine,
    candidate: Engine,
    good: Sequence[np.ndarray],
    bad: Sequence[np.ndarray] = (),
) -> dict[str, Any]:
    """Compare two engines of one bundle on the same images, in the manifest's units."""
    manifest = bundle.manifest
    scorer = MapScorer(manifest.normalization)
    threshold = manifest.threshold.image
    spec = manifest.model.input
    images = [*good, *bad]
    ref_scores, cand_scores, max_diff = [], [], 0.0
    for batch in _batches(images, (spec.height, spec.width), spec.resize):
        r_st, r_ae = reference.run(batch)
        r = scorer.combine(r_st[0, 0], r_ae[0, 0])
        c_st, c_ae = candidate.run(batch)
        c = scorer.combine(c_st[0, 0], c_ae[0, 0])
        max_diff = max(max_diff, float(np.max(np.abs(r - c))))
        ref_scores.append(scorer.score(r))
        cand_scores.append(scorer.score(c))
    ref, cand = np.array(ref_scores), np.array(cand_scores)
    flips = int(np.sum((ref > threshold) != (cand > threshold)))
    n_good = len(good)
    report: dict[str, Any] = {
        "images": len(images),
        "defective_images": len(bad),
        "max_map_difference": max_diff,
        "max_score_difference": float(np.max(np.abs(ref - cand))) if images else 0.0,
        "score_correlation": float(np.corrcoef(ref, cand)[0, 1]) if len(images) > 2 else None,
        "verdict_flips": flips,
        "threshold": threshold,
    }
    if len(bad):
        ref_auc = auroc(ref[:n_good], ref[n_good:])
        cand_auc = auroc(cand[:n_good], cand[n_good:])
        report.update(auroc_fp32=ref_auc, auroc_variant=cand_auc, auroc_change=cand_auc - ref_auc)
    return report


def gate_devices(kind: str) -> list[str]:
    """Where a variant's parity is checked: always the CPU; for int8 also OpenVINO and for
    fp16 also CUDA when installed, since the runtime picks those for these variants."""
    from edge_sdk.runtime.providers import available_providers

    ort = require("onnxruntime", extra="gpu", feature="the parity gate")
    have = available_providers(ort)
    extra = {
        "int8": ("openvino", "OpenVINOExecutionProvider"),
        "fp16": ("cuda", "CUDAExecutionProvider"),
    }
    device, provider = extra[kind]
    return ["cpu", device] if provider in have else ["cpu"]


def add_variant(
    bundle_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    kind: VariantKind,
    good: Sequence[np.ndarray],
    bad: Sequence[np.ndarray] = (),
    allow_flips: bool = False,
    name: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write a new bundle = the old one plus a gated variant. Returns it and the parity."""
    if len(good) < 2:
        raise EdgeADError(
            f"{kind}: need good images to calibrate and check parity, got {len(good)}"
        )
    bundle = Bundle.open(bundle_path)
    spec = bundle.manifest.model
    if spec.input.tiling is not None:
        # Their int8 ranges and parity gate would see squeezed frames, not the tiles the
        # line runs: refused until they are calibrated and gated on tiles (issue 16).
        raise EdgeADError(
            f"{bundle.path}: {kind} variants of tiled bundles are not supported yet; the "
            "float32 graph runs them"
        )
    fp32 = bundle.graph("fp32")
    if kind == "int8":
        graph = quantize_int8(
            fp32,
            good,
            input_name=spec.input.name,
            hw=(spec.input.height, spec.input.width),
            resize=spec.input.resize,
        )
    else:
        graph = convert_fp16(fp32)
    reference = Engine.from_graph(fp32, spec, EngineOptions(device="cpu"), warmup=False)
    by_provider: dict[str, dict[str, Any]] = {}
    not_checked: dict[str, str] = {}
    for device in gate_devices(kind):
        options = EngineOptions(device=device)  # type: ignore[arg-type]
        try:
            candidate = Engine.from_graph(graph, spec, options, variant=kind, warmup=False)
        except EngineError as exc:
            if device == "cpu":
                raise
            # A GPU build without a usable GPU (a build server): say so in the manifest.
            log.warning("%s parity not checked on %s: %s", kind, device, exc)
            not_checked[device] = str(exc)
            continue
        by_provider[candidate.provider] = parity(bundle, reference, candidate, good, bad)
    # The gate judges the worst provider: each runs the same graph with its own kernels.
    worst = max(
        by_provider,
        key=lambda p: (by_provider[p]["verdict_flips"], by_provider[p]["max_map_difference"]),
    )
    report = dict(by_provider[worst])
    report["checked_on"] = sorted(by_provider)
    if kind == "int8":
        report["activation_headroom"] = ACTIVATION_HEADROOM
    if len(by_provider) > 1:
        report["by_provider"] = by_provider
    if not_checked:
        report["not_checked_on"] = not_checked
    log.info("%s parity: %s", kind, report)
    if report["verdict_flips"] and not allow_flips:
        raise ParityError(
            f"{bundle.path}: the {kind} graph flips {report['verdict_flips']} of "
            f"{report['images']} verdicts at threshold {report['threshold']:.6g} (largest "
            f"map difference {report['max_map_difference']:.4g}); refused. Pass "
            "allow_flips (--allow-flips) to write it anyway."
        )
    file = f"model.{kind}.onnx"
    variants = dict(spec.variants)
    variants[kind] = GraphFile(file=file, sha256=sha256_hex(graph), parity=report)
    manifest = bundle.manifest.model_copy(
        update={
            "model": spec.model_copy(update={"variants": variants}),
            "name": name or f"{bundle.manifest.name}+{kind}",
            "parent": f"{bundle.manifest.name} (sha256 of model.onnx {spec.sha256[:16]})",
        }
    )
    files = {spec.file: fp32, file: graph}
    for other, ref in spec.variants.items():
        if other != kind:
            files[ref.file] = bundle.graph(other)
    return write_bundle(out, manifest, files), report
