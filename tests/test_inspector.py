"""The Inspector: verdicts, maps, batches, and failures that must become ERROR verdicts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk import Bundle, Inspector, Verdict

pytest.importorskip("onnx")
from tiny_graphs import (
    brightness_graph,
    failing_graph,
    nan_graph,
    write_tiny_bundle,
)


@pytest.fixture()
def tiny(tmp_path: Path) -> Inspector:
    return Inspector.open(
        write_tiny_bundle(tmp_path / "tiny.bundle", brightness_graph()), device="cpu"
    )


def test_verdicts_follow_the_threshold(tiny: Inspector) -> None:
    grey = np.full((300, 400), 128, np.uint8)
    bright = grey.copy()
    bright[100:160, 150:230] = 255
    ok, nok = tiny.inspect(grey), tiny.inspect(bright, frame_id=7, part_id="p7")
    assert ok.verdict is Verdict.OK and nok.verdict is Verdict.NOK
    # brightness 128 -> 0.1 * (128 - 100) / 100; 255 -> 0.155
    assert ok.score == pytest.approx(0.028, abs=1e-5)
    assert nok.score == pytest.approx(0.155, abs=1e-5)
    assert (nok.frame_id, nok.part_id, nok.threshold) == (7, "p7", 0.1)
    assert nok.verdict.is_reject and not ok.verdict.is_reject


def test_maps_at_model_and_image_size(tiny: Inspector) -> None:
    image = np.full((300, 400), 128, np.uint8)
    image[100:160, 150:230] = 255
    result = tiny.inspect(image)
    assert result.anomaly_map is not None
    assert result.anomaly_map.shape == (64 + 8, 64 + 8)  # 4 px pad on a 64x64 map
    full = tiny.full_map(result)
    assert full.shape == (300, 400) and full.dtype == np.float32
    mask = tiny.defect_mask(result)
    assert mask.dtype == bool and mask.shape == (300, 400)
    ys, xs = np.nonzero(mask)
    # The defect mask lands on the bright rectangle (within the 4x4 cell blur of resizing).
    assert ys.min() >= 90 and ys.max() <= 170 and xs.min() >= 140 and xs.max() <= 240
    # Bilinear upsampling never exceeds the model-resolution maximum used for the score.
    assert full.max() <= result.score + 1e-6


def test_grey_colour_and_alpha_inputs_agree(tiny: Inspector) -> None:
    grey = np.random.default_rng(1).integers(0, 256, (240, 320), dtype=np.uint8)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    bgra = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA)
    scores = [tiny.inspect(img).score for img in (grey, grey[:, :, None], bgr, bgra)]
    assert max(scores) - min(scores) < 1e-6


def test_colour_order_reaches_the_graph_as_rgb(s_bundle: Path) -> None:
    # A real EfficientAD graph distinguishes red from blue: BGR input must be swapped.
    with Inspector.open(s_bundle, device="cpu") as inspector:
        red = np.zeros((64, 64, 3), np.uint8)
        red[:, :, 2] = 255  # red in OpenCV's BGR order
        rgb_red = np.zeros((1, 3, 256, 256), np.uint8)
        rgb_red[0, 0] = 255
        st, ae = inspector.engine.run(rgb_red)
        expected = inspector.scorer.score(inspector.scorer.combine(st[0, 0], ae[0, 0]))
        assert inspector.inspect(red).score == pytest.approx(expected, rel=1e-5)


def test_batch_equals_one_by_one(s_bundle: Path) -> None:
    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 256, size, dtype=np.uint8)
        for size in [(256, 256), (300, 500), (480, 640, 3), (100, 90)]
    ]
    with Inspector.open(s_bundle, device="cpu", max_batch=3) as inspector:
        batch = inspector.inspect_batch(images, frame_ids=[10, 11, 12, 13])
        singles = [inspector.inspect(img, frame_id=10 + i) for i, img in enumerate(images)]
    assert [r.frame_id for r in batch] == [10, 11, 12, 13]
    for b, s in zip(batch, singles, strict=True):
        assert b.verdict == s.verdict
        assert b.score == pytest.approx(s.score, rel=1e-4, abs=1e-6)
        assert b.latency.infer_ms > 0 and b.latency.total_ms >= b.latency.infer_ms


def test_scoring_matches_the_reference_formula(s_bundle: Path) -> None:
    """Score and full map equal the reference code's post-processing, written out here."""
    import onnxruntime as ort

    bundle = Bundle.open(s_bundle)
    norm = bundle.manifest.normalization
    image = np.random.default_rng(4).integers(0, 256, (333, 222), dtype=np.uint8)
    x = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
    x = np.repeat(x[None, None], 3, axis=1)
    session = ort.InferenceSession(bundle.graph(), providers=["CPUExecutionProvider"])
    st, ae = session.run(["map_st", "map_ae"], {"image": x})
    st = 0.1 * (st[0, 0] - norm.st.qa) / (norm.st.qb - norm.st.qa)
    ae = 0.1 * (ae[0, 0] - norm.ae.qa) / (norm.ae.qb - norm.ae.qa)
    combined = np.pad(0.5 * st + 0.5 * ae, 4, mode="edge")
    full = cv2.resize(combined.astype(np.float32), (222, 333), interpolation=cv2.INTER_LINEAR)
    with Inspector.open(bundle, device="cpu") as inspector:
        result = inspector.inspect(image)
        np.testing.assert_allclose(inspector.full_map(result), full, rtol=1e-4, atol=1e-6)
    assert result.score == pytest.approx(float(combined.max()), rel=1e-5)


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.zeros((50, 50), np.float32), "uint8"),
        (np.zeros((50, 50, 2), np.uint8), "shape"),
        (np.zeros((0, 10), np.uint8), "empty"),
        ("not an image", "numpy array"),
    ],
)
def test_bad_image_gets_error_verdict_alone(tiny: Inspector, image: object, reason: str) -> None:
    good = np.full((64, 64), 128, np.uint8)
    results = tiny.inspect_batch([good, image, good], frame_ids=[1, 2, 3])  # type: ignore[list-item]
    assert [r.verdict for r in results] == [Verdict.OK, Verdict.ERROR, Verdict.OK]
    bad = results[1]
    assert bad.frame_id == 2 and reason in (bad.error or "") and np.isnan(bad.score)
    assert bad.to_dict()["score"] is None


def test_graph_failing_at_run_time_gives_error_for_every_frame(tmp_path: Path) -> None:
    path = write_tiny_bundle(tmp_path / "failing.bundle", failing_graph())
    inspector = Inspector.open(path, device="cpu", warmup=False)
    images = [np.full((64, 64), v, np.uint8) for v in (0, 128, 255)]
    results = inspector.inspect_batch(images, frame_ids=[5, 6, 7])
    assert [r.frame_id for r in results] == [5, 6, 7]
    assert all(r.verdict is Verdict.ERROR for r in results)
    assert all("inference" in (r.error or "") for r in results)


def test_non_finite_map_is_an_error_never_a_pass(tmp_path: Path) -> None:
    inspector = Inspector.open(
        write_tiny_bundle(tmp_path / "nan.bundle", nan_graph()), device="cpu"
    )
    result = inspector.inspect(np.full((64, 64), 128, np.uint8))
    assert result.verdict is Verdict.ERROR and "non-finite" in (result.error or "")


def test_overlay_for_each_verdict(tiny: Inspector) -> None:
    image = np.full((120, 160), 128, np.uint8)
    image[40:80, 60:100] = 255
    result = tiny.inspect(image)
    overlay = tiny.overlay(image, result)
    assert overlay.shape == (120, 160, 3) and overlay.dtype == np.uint8
    error = tiny.inspect(np.zeros((5, 5), np.float64))  # type: ignore[arg-type]
    assert tiny.overlay(image, error).shape == (120, 160, 3)


def test_provider_is_reported(tiny: Inspector) -> None:
    assert tiny.provider == "CPUExecutionProvider"
    assert tiny.engine.variant == "fp32"


def test_engine_settings_are_typed_options(tmp_path: Path) -> None:
    from edge_sdk import ConfigError, EngineOptions

    bundle = write_tiny_bundle(tmp_path / "tiny.bundle", brightness_graph())
    with Inspector.open(bundle, engine=EngineOptions(device="cpu", threads=1)) as inspector:
        assert inspector.provider == "CPUExecutionProvider"
    with pytest.raises(ConfigError, match="not both"):
        Inspector.open(bundle, device="cpu", engine=EngineOptions(device="cpu"))
    with pytest.raises(TypeError):  # a misspelled setting is an error, not swallowed
        Inspector.open(bundle, device="cpu", cuda_graphs=False)  # type: ignore[call-arg]
