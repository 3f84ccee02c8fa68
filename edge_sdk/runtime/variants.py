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

A tiled bundle's variant is calibrated on its tiles and gated on whole parts, as the line
inspects them: every tile through both graphs, the maps stitched, one verdict per part.
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
from edge_sdk.runtime.fp16_graph import convert_fp16
from edge_sdk.runtime.manifest import GraphFile, InputSpec
from edge_sdk.runtime.preprocess import to_model_input
from edge_sdk.runtime.scoring import MapScorer
from edge_sdk.runtime.tiled import TiledFrames, cut_tiles
from edge_sdk.runtime.tiling import plan_regions
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


# Tiles that calibrate a tiled bundle's int8 ranges, spread evenly over every tile of the
# calibration images (edge tiles see other content than centre ones). ONNX Runtime keeps
# every calibration input's activations in memory until the end (its bounded mode,
# CalibMaxIntermediateOutputs, drops the earlier chunks' ranges in 1.32: onnxruntime issue
# 18893), so this stays at the 64 images an untiled bundle calibrates on.
INT8_TILES = 64


def calibration_inputs(
    spec: InputSpec, images: Sequence[np.ndarray], *, max_tiles: int = INT8_TILES
) -> list[np.ndarray]:
    """The graph inputs ([1, 3, h, w] uint8) that set a variant's int8 ranges: each image
    squeezed to the model's size, or for a tiled bundle up to ``max_tiles`` of its tiles."""
    if spec.tiling is None:
        return list(_batches(images, (spec.height, spec.width), spec.resize))
    tiling = spec.tiling
    plans = [plan_regions(tiling, image.shape) for image in images]
    total = sum(len(p.tiles) for plan in plans for p in plan)
    chosen = set(np.linspace(0, total - 1, min(total, max_tiles)).round().astype(int).tolist())
    inputs, k = [], 0
    for image, plan in zip(images, plans, strict=True):
        tiles = cut_tiles(image, plan, tiling.grid.size, spec.resize)
        inputs += [tiles[j : j + 1].copy() for j in range(len(tiles)) if k + j in chosen]
        k += len(tiles)
    return inputs


def quantize_int8(
    graph: bytes, inputs: Sequence[np.ndarray], *, input_name: str = "image"
) -> bytes:
    """The int8 QDQ graph, calibrated (MinMax) on ``inputs`` (graph inputs of good parts:
    :func:`calibration_inputs`), with :data:`ACTIVATION_HEADROOM` above their ranges."""
    quant: Any = require("onnxruntime.quantization", extra="train", feature="int8 quantization")
    require("onnx", extra="train", feature="int8 quantization")

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

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


class PartMaps:
    """Each part's combined maps and score through one engine, as the Inspector gets them:
    the image squeezed to the model's size, or every tile of it stitched into a part."""

    def __init__(self, spec: InputSpec, scorer: MapScorer):
        self.spec, self.scorer = spec, scorer
        self.frames = (
            None
            if spec.tiling is None
            else TiledFrames(spec.tiling, scorer, resize=spec.resize, max_batch=8)
        )

    def inputs(self, image: np.ndarray) -> np.ndarray:
        """The image's graph input: its tiles, or the image at the model's size."""
        if self.frames is None:
            return next(_batches([image], (self.spec.height, self.spec.width), self.spec.resize))
        return self.frames.cut(image)[1].copy()

    def run(
        self, image: np.ndarray, inputs: np.ndarray, engine: Engine
    ) -> tuple[list[np.ndarray], float]:
        """The combined maps of ``inputs`` (from :meth:`inputs`) and the part's score."""
        if self.frames is None:
            st, ae = engine.run(inputs)
            combined = self.scorer.combine(st[0, 0], ae[0, 0])
            return [combined], self.scorer.score(combined)
        maps = self.frames.run(inputs, engine.run)
        plans = self.frames.plans(image.shape)
        return maps, self.frames.assemble(image.shape, plans, maps)[1]


def parity(
    bundle: Bundle,
    reference: Engine,
    candidate: Engine,
    good: Sequence[np.ndarray],
    bad: Sequence[np.ndarray] = (),
) -> dict[str, Any]:
    """Compare two engines of one bundle on the same parts, in the manifest's units."""
    manifest = bundle.manifest
    threshold = manifest.threshold.image
    parts = PartMaps(manifest.model.input, MapScorer(manifest.normalization))
    images = [*good, *bad]
    ref_scores, cand_scores, max_diff, tiles = [], [], 0.0, 0
    for image in images:
        inputs = parts.inputs(image)
        tiles += len(inputs)
        r_maps, r_score = parts.run(image, inputs, reference)
        c_maps, c_score = parts.run(image, inputs, candidate)
        for r, c in zip(r_maps, c_maps, strict=True):
            max_diff = max(max_diff, float(np.max(np.abs(r - c))))
        ref_scores.append(r_score)
        cand_scores.append(c_score)
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
    if manifest.model.input.tiling is not None:
        report["tiles"] = tiles
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
    fp32 = bundle.graph("fp32")
    if kind == "int8":
        inputs = calibration_inputs(spec.input, good)
        graph = quantize_int8(fp32, inputs, input_name=spec.input.name)
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
