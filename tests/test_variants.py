"""int8 / fp16 variants behind the parity gate, the runtime's choice of variant, bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_sdk import Bundle, Inspector
from edge_sdk.tools.synthetic import defective_part, good_part

pytest.importorskip("onnx")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def images() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(11)
    return [good_part(rng) for _ in range(6)], [defective_part(rng)[0] for _ in range(3)]


def test_int8_variant_is_recorded_and_preferred_on_cpu(
    s_bundle: Path, tmp_path: Path, images
) -> None:
    from edge_sdk.runtime.variants import add_variant

    good, bad = images
    out, report = add_variant(
        s_bundle, tmp_path / "int8.bundle", kind="int8", good=good, bad=bad, allow_flips=True
    )
    for key in ("max_map_difference", "verdict_flips", "auroc_change", "images"):
        assert key in report
    assert report["images"] == 9 and report["defective_images"] == 3
    bundle = Bundle.open(out)
    assert bundle.manifest.model.variants["int8"].parity == report
    assert bundle.graph("fp32") == Bundle.open(s_bundle).graph("fp32")
    assert bundle.manifest.parent and "random-s" in bundle.manifest.parent
    with Inspector.open(out, device="cpu") as inspector:
        assert inspector.engine.variant == "int8"  # the CPU's best variant, chosen alone
        assert np.isfinite(inspector.inspect(good[0]).score)
        # Near-threshold parts are re-decided by float32, 3x the gate's score difference.
        assert inspector.recheck is not None and inspector.recheck.variant == "fp32"
        assert inspector.recheck_margin == pytest.approx(3 * report["max_score_difference"])
    with Inspector.open(out, device="cpu", recheck=False) as raw:
        assert raw.recheck is None


def test_float32_re_decides_parts_near_the_threshold(s_bundle: Path, tmp_path: Path, images):
    from edge_sdk.errors import EngineError
    from edge_sdk.records import Verdict
    from edge_sdk.runtime.engine import Engine, EngineOptions
    from edge_sdk.runtime.variants import add_variant

    good, bad = images
    out, _ = add_variant(
        s_bundle, tmp_path / "int8.bundle", kind="int8", good=good, bad=bad, allow_flips=True
    )
    bundle = Bundle.open(out)
    fp32 = Inspector.open(bundle, device="cpu", variant="fp32")
    int8 = Inspector.open(bundle, device="cpu", variant="int8", recheck=False)
    part = bad[0]
    exact, fast = fp32.inspect(part), int8.inspect(part)
    assert exact.graph == "fp32" and fast.graph == "int8" and fast.score != exact.score
    # A threshold between the two scores: the int8 verdict alone would differ from fp32's.
    threshold = (exact.score + fast.score) / 2
    exact_engine = Engine.from_bundle(bundle, EngineOptions(device="cpu", variant="fp32"))
    margin = abs(fast.score - exact.score)
    guarded = Inspector(bundle.manifest, int8.engine, recheck=exact_engine, recheck_margin=margin)
    for inspector in (fp32, int8, guarded):
        inspector.image_threshold = threshold
    assert fp32.inspect(part).verdict != int8.inspect(part).verdict
    result = guarded.inspect(part)
    assert result.graph == "fp32" and result.verdict == fp32.inspect(part).verdict
    assert result.score == pytest.approx(exact.score, rel=1e-6)
    # Far from the threshold the variant decides alone.
    guarded.image_threshold = exact.score + 10 * margin + 1.0
    assert guarded.inspect(part).graph == "int8"

    class Broken:  # a recheck engine that fails: the part is rejected, never passed
        variant = "fp32"

        def run(self, batch: np.ndarray) -> None:
            raise EngineError("device lost")

    guarded.image_threshold = threshold
    guarded.recheck = Broken()  # type: ignore[assignment]
    failed = guarded.inspect(part)
    assert failed.verdict is Verdict.ERROR and "recheck: device lost" in (failed.error or "")


def test_gate_refuses_a_variant_that_flips_a_verdict(
    s_bundle: Path, tmp_path: Path, images
) -> None:
    """Put the threshold between one image's fp32 and int8 scores: the gate must refuse."""
    import zipfile

    import yaml

    from edge_sdk.runtime.engine import Engine, EngineOptions
    from edge_sdk.runtime.scoring import MapScorer
    from edge_sdk.runtime.variants import (
        ParityError,
        _batches,
        add_variant,
        calibration_inputs,
        quantize_int8,
    )

    good, bad = images
    bundle = Bundle.open(s_bundle)
    spec = bundle.manifest.model
    # Deterministic: add_variant gets the same graph.
    int8 = quantize_int8(bundle.graph(), calibration_inputs(spec.input, good))
    engines = [
        Engine.from_graph(g, spec, EngineOptions(device="cpu"), warmup=False)
        for g in (bundle.graph(), int8)
    ]
    scorer = MapScorer(bundle.manifest.normalization)
    pairs = []
    for batch in _batches([*good, *bad], (256, 256), "area"):
        pairs.append(
            [scorer.score(scorer.combine(*(m[0, 0] for m in e.run(batch)))) for e in engines]
        )
    ref, cand = max(pairs, key=lambda p: abs(p[0] - p[1]))
    assert ref != cand
    edited = tmp_path / "edge.bundle"
    with zipfile.ZipFile(s_bundle) as src, zipfile.ZipFile(edited, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "bundle.yaml":
                manifest = yaml.safe_load(data)
                manifest["threshold"]["image"] = (ref + cand) / 2
                data = yaml.safe_dump(manifest).encode()
            dst.writestr(name, data)
    with pytest.raises(ParityError, match=r"flips \d+ of 9 verdicts"):
        add_variant(edited, tmp_path / "x.bundle", kind="int8", good=good, bad=bad)
    assert not (tmp_path / "x.bundle").exists()


def test_fp16_variant_parity(s_bundle: Path, tmp_path: Path, images) -> None:
    from edge_sdk.runtime.variants import add_variant

    good, bad = images
    out, report = add_variant(
        s_bundle, tmp_path / "fp16.bundle", kind="fp16", good=good, bad=bad, allow_flips=True
    )
    assert report["max_map_difference"] < 0.05
    assert Bundle.open(out).manifest.model.variants["fp16"].file == "model.fp16.onnx"
    assert report["checked_on"] == ["CPUExecutionProvider"]  # no CUDA here


def test_fp16_keeps_the_map_arithmetic_in_float32(s_bundle: Path) -> None:
    import onnx
    from onnx import TensorProto

    from edge_sdk.runtime.fp16_graph import FP16_OPS, convert_fp16

    model = onnx.load_from_string(convert_fp16(Bundle.open(s_bundle).graph()))
    del model.graph.value_info[:]  # the converter's own notes; infer the types afresh
    model = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    elem.update({i.name: i.data_type for i in model.graph.initializer})
    elem.update({o.name: o.type.tensor_type.elem_type for o in model.graph.output})
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(elem[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    kept = [n for n in model.graph.node if n.op_type in ("ReduceSum", "Sub", "Resize")]
    assert kept and all(elem[n.output[0]] == TensorProto.FLOAT for n in kept)
    assert {"Conv", "Relu"} <= FP16_OPS and "ReduceSum" not in FP16_OPS
    # No rounding to fp16 between two float32 nodes: a cast to fp16 only feeds fp16 layers,
    # and the constants of float32 nodes (the channel mean's 1/384) stay float32.
    to_fp16 = {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT16
    }
    consumers = [n for n in model.graph.node if set(n.input) & to_fp16]
    assert consumers and all(n.op_type in FP16_OPS for n in consumers)
    for node in model.graph.node:
        if node.op_type == "Mul":
            assert all(elem[i] == TensorProto.FLOAT for i in node.input)


def test_pytorch_reference_runs_the_same_weights(s_bundle: Path) -> None:
    import onnxruntime as ort

    from edge_sdk.training.reference import torch_reference

    bundle = Bundle.open(s_bundle)
    run = torch_reference(bundle, threads=0)
    assert run is not None
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 256, 256), dtype=np.uint8)
    st, ae = run(x)
    session = ort.InferenceSession(bundle.graph(), providers=["CPUExecutionProvider"])
    ort_st, ort_ae = session.run(["map_st", "map_ae"], {"image": x})
    np.testing.assert_allclose(st.numpy(), ort_st, rtol=1e-4, atol=1e-5 * abs(ort_st).max())
    np.testing.assert_allclose(ae.numpy(), ort_ae, rtol=1e-4, atol=1e-5 * abs(ort_ae).max())


def test_bench_report(s_bundle: Path) -> None:
    from edge_sdk.tools.bench import BenchOptions, format_report, run_bench

    options = BenchOptions(devices=("cpu",), rounds=1, batches=(1, 2))
    report = run_bench(str(s_bundle), options)
    names = [r["name"] for r in report["rows"]]
    assert names == ["cpu/fp32/batch1", "cpu/fp32/batch2", "pytorch-eager/fp32/batch1"]
    assert report["reference_device"] == "cpu" and report["gpu"] is None
    assert all(r["speedup_vs_reference"] > 0 for r in report["rows"])
    assert "pytorch-eager/fp32" in format_report(report)
    peak = report["peaks"]["fp32"]
    assert peak["peak_gops"] == max(peak["peak_gops_by_device"].values())
    # every reference convolution and the model's own largest (the student's last, for S),
    # on every CPU provider, timed in the model's rounds
    assert len(peak["by_shape"]) == 4 * len(peak["peak_gops_by_device"])
    assert "cpu/model 256->768 k4 59x59" in peak["by_shape"]
    assert peak["peak_gops"] == max(peak["by_shape"].values())
    assert report["rows"][0]["x_floor"] == pytest.approx(
        report["rows"][0]["per_image_ms"] / peak["floor_ms"]
    )
    # The instruction-level floor: no kernel and no graph beats it.
    if report["cpu"] is not None:
        unit = peak["instruction"]
        assert unit["peak_gops"] >= peak["peak_gops"] * 0.999
        assert all(r["x_instruction_floor"] >= 1 for r in report["rows"] if r["device"] == "cpu")
        assert report["clock"]["ghz"] >= report["cpu"]["clock_ghz"]
        assert report["load_average"]["after"] is not None
        assert "at the instruction level" in format_report(report)


def test_int8_ranges_have_headroom_and_the_image_is_exact(s_bundle: Path, images) -> None:
    import onnx
    from onnx import numpy_helper

    from edge_sdk.runtime.variants import (
        ACTIVATION_HEADROOM,
        calibration_inputs,
        quantize_int8,
        widen_activation_ranges,
    )

    good, _ = images
    bundle = Bundle.open(s_bundle)
    graph = quantize_int8(bundle.graph(), calibration_inputs(bundle.manifest.model.input, good))
    model = onnx.load_from_string(graph)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    image = [n for n in quantize if "copy" in n.input[0] or "cast" in n.input[0].lower()]
    assert len(image) == 1, [n.input[0] for n in quantize[:3]]
    assert inits[image[0].input[1]] == 1.0 and inits[image[0].input[2]] == 0
    # Every activation Q and its DQ share one scale, so widening keeps them consistent.
    q_scales = {n.input[1] for n in quantize}
    weights = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"} - {
        n.output[0] for n in quantize
    }
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] not in weights:
            assert node.input[1] in q_scales
    wider = onnx.load_from_string(widen_activation_ranges(graph, 2.0))
    after = {i.name: numpy_helper.to_array(i) for i in wider.graph.initializer}
    hidden = next(n.input[1] for n in quantize if n is not image[0])
    assert after[hidden] == pytest.approx(2.0 * inits[hidden])
    assert after[image[0].input[1]] == 1.0
    assert ACTIVATION_HEADROOM > 1


def test_widened_biases_keep_the_step_onnx_runtime_fuses_on(s_bundle: Path, images) -> None:
    """bias step = input step x weight step, or ONNX Runtime cannot fuse QLinearConv."""
    import onnx
    from onnx import numpy_helper

    from edge_sdk.runtime.variants import calibration_inputs, quantize_int8

    bundle = Bundle.open(s_bundle)
    inputs = calibration_inputs(bundle.manifest.model.input, images[0])
    model = onnx.load_from_string(quantize_int8(bundle.graph(), inputs))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {n.output[0]: n for n in model.graph.node}
    checked = 0
    for conv in (n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2):
        x, w, b = (producer[name] for name in conv.input)
        expected = inits[x.input[1]] * inits[w.input[1]]
        np.testing.assert_allclose(inits[b.input[1]], expected, rtol=1e-5)
        checked += 1
    assert checked >= 10


def _tiled_copy(bundle: Path, out: Path) -> Path:
    """The same bundle with a 256 px tile grid at native resolution over the whole frame."""
    import zipfile

    import yaml

    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "bundle.yaml":
                manifest = yaml.safe_load(data)
                manifest["model"]["input"]["tiling"] = {
                    "grid": {"size": 256, "overlap": 32, "scale": 1.0}
                }
                data = yaml.safe_dump(manifest).encode()
            dst.writestr(name, data)
    return out


def test_a_tiled_bundle_gets_variants_calibrated_on_tiles_and_gated_on_parts(
    s_bundle: Path, tmp_path: Path
) -> None:
    from edge_sdk.runtime.tiled import cut_tiles
    from edge_sdk.runtime.tiling import plan_regions
    from edge_sdk.runtime.variants import add_variant, calibration_inputs

    tiled = _tiled_copy(s_bundle, tmp_path / "tiled.bundle")
    spec = Bundle.open(tiled).manifest.model.input
    assert spec.tiling is not None
    rng = np.random.default_rng(5)
    good = [good_part(rng, height=256, width=320) for _ in range(3)]
    bad = [np.hstack([defective_part(rng)[0], good_part(rng, height=256, width=64)])]

    # int8 ranges come from tiles, spread over every tile of the images (2 per image).
    inputs = calibration_inputs(spec, good, max_tiles=3)
    every = [t for g in good for t in cut_tiles(g, plan_regions(spec.tiling, g.shape), 256, "area")]
    assert len(every) == 6 and [x.shape for x in inputs] == [(1, 3, 256, 256)] * 3
    for x, k in zip(inputs, (0, 2, 5), strict=True):  # evenly spread, both ends kept
        np.testing.assert_array_equal(x[0], every[k])

    out, report = add_variant(
        tiled, tmp_path / "int8.bundle", kind="int8", good=good, bad=bad, allow_flips=True
    )
    assert report["images"] == 4 and report["tiles"] == 8
    bundle = Bundle.open(out)
    assert bundle.manifest.model.input.tiling == spec.tiling
    # The gate scored whole parts as the Inspector does: its score difference is theirs.
    with (
        Inspector.open(out, device="cpu", variant="fp32") as exact,
        Inspector.open(out, device="cpu", variant="int8", recheck=False) as fast,
    ):
        pairs = [(exact.inspect(p), fast.inspect(p)) for p in [*good, *bad]]
    assert all(e.worst_tile and f.worst_tile for e, f in pairs)
    diff = max(abs(e.score - f.score) for e, f in pairs)
    assert report["max_score_difference"] == pytest.approx(diff, rel=1e-4, abs=1e-6)
    assert diff > 0  # int8 really ran

    _, fp16 = add_variant(tiled, tmp_path / "fp16.bundle", kind="fp16", good=good, allow_flips=True)
    assert fp16["tiles"] == 6 and fp16["max_map_difference"] < 0.05
