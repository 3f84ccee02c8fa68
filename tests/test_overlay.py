"""Overlays: an anchored colour scale, outlines where the map crosses the threshold, labels."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge_sdk.errors import EdgeADError
from edge_sdk.records import Verdict
from edge_sdk.runtime.overlay import (
    VERDICT_COLORS,
    color_index,
    encode_jpeg,
    render_error_overlay,
    render_overlay,
    write_image,
)

H, W = 300, 400
WHITE = np.array([255, 255, 255], np.uint8)
# Away from the verdict label (top left) and the legend (top right).
FREE = (slice(60, H), slice(0, 300))


def _render(image: np.ndarray, amap: np.ndarray, **kw: object) -> np.ndarray:
    args: dict[str, object] = {
        "pixel_threshold": 0.2,
        "verdict": Verdict.NOK,
        "score": float(np.nanmax(amap)) if not np.isnan(amap).all() else math.nan,
        "image_threshold": 0.3,
    }
    args.update(kw)
    return render_overlay(image, amap, **args)  # type: ignore[arg-type]


def _grey(value: int = 100) -> np.ndarray:
    return np.full((H, W), value, np.uint8)


def _border(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask that touch a pixel outside it (4-neighbourhood)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, kernel, borderValue=0)).astype(bool)


def test_output_is_a_new_bgr_uint8_image_and_input_is_untouched() -> None:
    image = _grey()
    before = image.copy()
    amap = np.zeros((H, W), np.float32)
    out = _render(image, amap)
    assert out.shape == (H, W, 3)
    assert out.dtype == np.uint8
    assert np.array_equal(image, before)


def test_same_value_gets_the_same_colour_whatever_the_maps_range() -> None:
    image = _grey()
    narrow = np.zeros((H, W), np.float32)  # range 0 .. 0.15
    wide = np.linspace(-5.0, 20.0, H * W, dtype=np.float32).reshape(H, W)  # range -5 .. 20
    for amap in (narrow, wide):
        amap[150:200, 100:160] = 0.15
    a = _render(image, narrow, pixel_threshold=0.2)
    b = _render(image, wide, pixel_threshold=0.2)
    assert np.array_equal(a[175, 130], b[175, 130])
    # Per-image min-max would have put 0.15 at the top of the narrow map's scale.
    assert color_index(0.15, 0.2) == round(0.15 / 0.4 * 255)


def test_threshold_sits_mid_scale_with_full_alpha() -> None:
    image = _grey(100)
    amap = np.zeros((H, W), np.float32)
    amap[150:200, 100:160] = 0.2
    out = _render(image, amap, pixel_threshold=0.2, alpha=0.5)
    jet = cv2.applyColorMap(np.array([[128]], np.uint8), cv2.COLORMAP_JET)[0, 0]
    expected = 0.5 * 100 + 0.5 * jet.astype(np.float64)
    assert np.abs(out[175, 130].astype(np.float64) - expected).max() <= 2


def test_a_normal_part_looks_like_the_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    amap = np.full((H, W), -0.05, np.float32)  # below the good images' 90th percentile
    out = _render(image, amap, verdict=Verdict.OK)
    assert np.array_equal(out[FREE], image[FREE])


def test_grey_and_colour_inputs_render_the_same() -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    amap = rng.normal(0.1, 0.2, (H, W)).astype(np.float32)
    a = _render(grey, amap)
    b = _render(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), amap)
    c = _render(grey[:, :, None], amap)
    assert np.array_equal(a, b)
    assert np.array_equal(a, c)


def test_contours_run_exactly_along_the_defect_borders() -> None:
    image = _grey(100)
    amap = np.zeros((H, W), np.float32)
    amap[120:200, 100:220] = 1.0
    amap[140:180, 130:190] = 0.0  # a hole: a ring's inner edge is outlined too
    amap[250:270, 30:60] = 0.2  # exactly at the threshold counts as defective
    out = _render(image, amap, pixel_threshold=0.2)
    border = _border(amap >= 0.2)
    white = np.all(out == WHITE, axis=2)
    assert white[border].all()
    near = cv2.dilate(border.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    stray = white[FREE] & ~near[FREE]
    assert not stray.any(), f"{stray.sum()} contour pixels away from any defect border"


def test_no_contour_below_threshold() -> None:
    amap = np.zeros((H, W), np.float32)
    amap[120:200, 100:220] = 0.19
    out = _render(_grey(), amap, pixel_threshold=0.2, verdict=Verdict.OK)
    assert not np.all(out[FREE] == WHITE, axis=2).any()


def _count(region: np.ndarray, bgr: tuple[int, int, int]) -> int:
    diff = np.abs(region.astype(np.int16) - np.array(bgr, np.int16))
    return int((diff.max(axis=2) < 60).sum())


@pytest.mark.parametrize("verdict", list(Verdict))
def test_verdict_text_has_the_verdict_colour(verdict: Verdict) -> None:
    amap = np.zeros((H, W), np.float32)
    out = _render(_grey(), amap, verdict=verdict, score=0.734, image_threshold=0.412)
    label = out[:40, :250]
    own = _count(label, VERDICT_COLORS[verdict])
    assert own > 50
    for other in Verdict:
        if other is not verdict:
            assert _count(label, VERDICT_COLORS[other]) < own / 10


def test_nan_is_treated_as_maximal_anomaly() -> None:
    image = _grey(100)
    amap = np.zeros((H, W), np.float32)
    amap[120:200, 100:160] = np.nan
    amap[120:200, 180:240] = 100.0
    out = _render(image, amap, pixel_threshold=0.2, verdict=Verdict.ERROR)
    assert np.array_equal(out[160, 130], out[160, 210])  # same colour as a huge value
    white = np.all(out == WHITE, axis=2)
    assert white[_border(np.isnan(amap))].all()


@pytest.mark.parametrize("threshold", [0.0, -0.3, math.nan, math.inf, -math.inf])
def test_unusable_pixel_threshold_still_renders(threshold: float) -> None:
    amap = np.random.default_rng(2).normal(0, 0.1, (H, W)).astype(np.float32)
    out = _render(_grey(), amap, pixel_threshold=threshold)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    # Same fixed fallback anchor each time, never the map's own range.
    assert color_index(0.1, threshold) == 128


def test_tiny_images_render() -> None:
    for shape in [(1, 1), (8, 5), (31, 200)]:
        out = render_overlay(
            np.zeros(shape, np.uint8),
            np.ones(shape, np.float32),
            pixel_threshold=0.5,
            verdict=Verdict.NOK,
            score=1.0,
            image_threshold=0.5,
        )
        assert out.shape == (*shape, 3)


def test_bad_inputs_are_refused_with_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(300, 400\).*\(64, 64\)"):
        _render(_grey(), np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        _render(np.zeros((H, W), np.float32), np.zeros((H, W), np.float32))
    with pytest.raises(ValueError, match="alpha"):
        _render(_grey(), np.zeros((H, W), np.float32), alpha=1.5)


def test_error_overlay_has_a_magenta_banner() -> None:
    image = _grey(100)
    message = "inference failed: " + "very long text " * 30 + "ünïcode\nnewline"
    for src in (image, cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)):
        out = render_error_overlay(src, message)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8
        assert _count(out[:25], VERDICT_COLORS[Verdict.ERROR]) > W * 10
        assert np.array_equal(out[H // 2, W // 2], [100, 100, 100])
    assert np.array_equal(image, _grey(100))


def test_encode_jpeg_round_trips() -> None:
    image = render_error_overlay(_grey(), "x")
    data = encode_jpeg(image, quality=80)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == image.shape
    assert len(encode_jpeg(image, quality=20)) < len(encode_jpeg(image, quality=95))
    with pytest.raises(ValueError):
        encode_jpeg(image, quality=101)


def test_write_image_writes_the_file_and_nothing_else(tmp_path) -> None:
    image = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    target = tmp_path / "part 1.png"
    write_image(target, image)
    assert np.array_equal(cv2.imread(str(target)), image)
    assert [p.name for p in tmp_path.iterdir()] == ["part 1.png"]


def test_write_image_failures_name_the_path(tmp_path) -> None:
    image = _grey()
    missing = tmp_path / "no-such-folder" / "part.png"
    with pytest.raises(EdgeADError, match="no-such-folder"):
        write_image(missing, image)
    unknown = tmp_path / "part.unknown"
    with pytest.raises(EdgeADError, match=r"part\.unknown"):
        write_image(unknown, image)
    assert list(tmp_path.iterdir()) == []
