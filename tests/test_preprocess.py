"""Preprocessing: the resize modes (above all ``area_fast`` against INTER_AREA), channel
order, scratch reuse, and the manifest and bundles that name the mode.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import data_set

from edge_sdk import BundleError
from edge_sdk.runtime.bundle import (
    Bundle,
    dump_manifest,
    example_manifest,
    parse_manifest,
    write_bundle,
)
from edge_sdk.runtime.preprocess import RESIZE_MODES, Scratch, resize_area_fast, to_model_input

# Camera frames, odd and non-square ones, sizes just around the 512 px switch-over, and
# sizes at or under the 256 px output (upscaling in one or both axes).
SIZES = [
    (2448, 2048),
    (2449, 2051),
    (1280, 1024),
    (4000, 600),
    (600, 4000),
    (1031, 517),
    (513, 512),
    (640, 480),
    (300, 300),
    (256, 256),
    (200, 300),
    (100, 80),
]


def smooth(width: int, height: int, channels: int = 0, seed: int = 0) -> np.ndarray:
    """Random detail at about a fortieth of the frame: smooth at every size tested."""
    shape = (24, 32, channels) if channels else (24, 32)
    coarse = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def area(image: np.ndarray, size: tuple[int, int] = (256, 256)) -> np.ndarray:
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_area_fast_is_close_to_inter_area(width: int, height: int) -> None:
    image = smooth(width, height)
    fast = resize_area_fast(image, (256, 256))
    assert fast.shape == (256, 256) and fast.dtype == np.uint8
    d = difference(fast, area(image))
    assert d.mean() < 0.35 and d.max() <= 2, (d.mean(), d.max())


@pytest.mark.parametrize(("width", "height"), [(511, 4000), (300, 300), (256, 256), (100, 80)])
def test_below_twice_the_output_it_is_inter_area_itself(width: int, height: int) -> None:
    image = smooth(width, height, 3)
    np.testing.assert_array_equal(resize_area_fast(image, (256, 256)), area(image))


def test_non_square_output() -> None:
    image = smooth(2449, 2051)
    fast = resize_area_fast(image, (320, 128))
    assert fast.shape == (128, 320)
    d = difference(fast, area(image, (320, 128)))
    assert d.mean() < 0.35 and d.max() <= 2


@pytest.mark.parametrize(("width", "height"), [(2448, 2048), (2449, 2051), (1280, 1024)])
def test_no_brightness_bias(width: int, height: int) -> None:
    # Detail finer than the 2x2 steps: each of their roundings is 1/8 grey level too bright
    # on average, which the last step takes out.
    noise = np.random.default_rng(1).integers(0, 256, (height, width), dtype=np.uint8)
    bias = resize_area_fast(noise, (256, 256)).mean() - area(noise).mean()
    assert abs(bias) < 0.1


@pytest.mark.parametrize(("width", "height"), [(2449, 2051), (4096, 4096), (8192, 8192)])
def test_flat_frames_keep_their_value(width: int, height: int) -> None:
    # 8192 px: four 2x2 steps, whose bias correction would otherwise reach half a level.
    for value in (0, 1, 127, 128, 254, 255):
        flat = np.full((height, width), value, np.uint8)
        assert np.all(resize_area_fast(flat, (256, 256)) == value), value


def test_geometry_of_odd_frames_matches_inter_area() -> None:
    # A sharp edge far from the centre: cropping for the 2x2 steps must not move it.
    image = np.zeros((2051, 2449), np.uint8)
    image[:, 2301:] = 255
    image[1877:, :] = 128
    d = difference(resize_area_fast(image, (256, 256)), area(image))
    assert d.mean() < 0.2 and d.max() <= 12


@pytest.mark.parametrize(("width", "height", "bound"), [(2448, 2048, 2.6), (4000, 600, 1.5)])
def test_antialiasing_on_noise_unlike_linear(width: int, height: int, bound: float) -> None:
    # Noise is all detail above the output's Nyquist frequency: whatever a method lets
    # through aliases. (Smaller downscales average fewer pixels, so differ more.)
    noise = np.random.default_rng(2).integers(0, 256, (height, width), dtype=np.uint8)
    reference = area(noise)
    fast = difference(resize_area_fast(noise, (256, 256)), reference).mean()
    linear = difference(cv2.resize(noise, (256, 256), interpolation=cv2.INTER_LINEAR), reference)
    assert fast < bound and linear.mean() > 10 * bound, (fast, linear.mean())


def test_real_images_upscaled_to_a_5mp_camera() -> None:
    root = data_set("kolektorsdd")
    files = sorted((root / "test").glob("*/*.jpg"))[::20][:4]
    assert files, f"no test images under {root}"
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        frame = cv2.resize(image, (2448, 2048), interpolation=cv2.INTER_CUBIC)
        out = np.empty((3, 256, 256), np.uint8)
        to_model_input(frame, out, resize="area_fast")
        assert difference(out[0], area(frame)).mean() < 1.0, path


def _bgr(width: int, height: int) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:, :] = (10, 20, 30)  # B, G, R
    image[: height // 3, :, 2] = 250
    return image


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize(("width", "height"), [(2449, 2051), (640, 480), (200, 300)])
def test_channel_order_and_shapes(mode: str, width: int, height: int) -> None:
    bgr = _bgr(width, height)
    bgra = np.dstack([bgr, np.full((height, width), 7, np.uint8)])
    grey = smooth(width, height)
    outputs = {}
    for name, image in {
        "bgr": bgr,
        "bgra": bgra,
        "grey": grey,
        "grey1": grey[:, :, None],
    }.items():
        out = np.zeros((3, 256, 256), np.uint8)
        to_model_input(image, out, resize=mode)
        outputs[name] = out
    rgb = outputs["bgr"]
    assert np.all(rgb[1] == 20) and np.all(rgb[2] == 10)  # G and B planes, no alpha
    assert rgb[0, 0, 0] == 250 and rgb[0, -1, -1] == 30  # R: bright top third
    np.testing.assert_array_equal(outputs["bgra"], rgb)
    np.testing.assert_array_equal(outputs["grey1"], outputs["grey"])
    assert all(np.array_equal(plane, outputs["grey"][0]) for plane in outputs["grey"])


def test_area_and_linear_are_unchanged() -> None:
    """Existing bundles must get bit-identical inputs."""
    for image in (smooth(2449, 2051), smooth(2449, 2051, 3), smooth(300, 200, 4)):
        for mode, interp in (("area", cv2.INTER_AREA), ("linear", cv2.INTER_LINEAR)):
            out = np.empty((3, 256, 256), np.uint8)
            to_model_input(image, out, resize=mode, scratch=Scratch())
            expected = cv2.resize(
                image[:, :, :3] if image.ndim == 3 else image, (256, 256), interpolation=interp
            )
            if expected.ndim == 2:
                expected = np.stack([expected] * 3, axis=-1)
            np.testing.assert_array_equal(out, expected[:, :, ::-1].transpose(2, 0, 1))


def test_scratch_is_reused_and_changes_nothing() -> None:
    frames = [smooth(2449, 2051, seed=s) for s in range(3)] + [smooth(1280, 1024, 3)]
    scratch = Scratch()
    first = resize_area_fast(frames[0], (256, 256), scratch=scratch)
    for frame in frames[1:3]:
        again = resize_area_fast(frame, (256, 256), scratch=scratch)
        assert again is first  # no new buffer per frame of the same size
        np.testing.assert_array_equal(again, resize_area_fast(frame, (256, 256)))
    colour = resize_area_fast(frames[3], (256, 256), scratch=scratch)
    assert colour.shape == (256, 256, 3)  # another size and channel count: new buffers
    np.testing.assert_array_equal(colour, resize_area_fast(frames[3], (256, 256)))


def test_unknown_mode_is_refused() -> None:
    out = np.empty((3, 256, 256), np.uint8)
    with pytest.raises(ValueError, match=r"unknown resize mode 'cubic'.*area_fast"):
        to_model_input(smooth(300, 300), out, resize="cubic")


def test_manifest_accepts_area_fast_and_refuses_unknown_modes() -> None:
    model = {"architecture": "efficientad-s", "sha256": "0" * 64, "input": {"resize": "area_fast"}}
    manifest = example_manifest(model=model)
    assert manifest.model.input.resize == "area_fast"
    assert parse_manifest(dump_manifest(manifest), source="x") == manifest
    text = dump_manifest(manifest).replace("resize: area_fast", "resize: cubic")
    with pytest.raises(BundleError) as info:
        parse_manifest(text, source="line3.bundle")
    message = str(info.value)
    assert "line3.bundle" in message and "model.input.resize" in message
    assert "'area', 'linear' or 'area_fast'" in message


def test_bundle_with_area_fast_round_trips_into_the_inspector(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from tiny_graphs import brightness_graph

    from edge_sdk import Inspector

    manifest = example_manifest(
        model={
            "architecture": "efficientad-s",
            "sha256": "0" * 64,
            "input": {"resize": "area_fast"},
        },
        normalization={
            "st": {"qa": 100.0, "qb": 200.0},
            "ae": {"qa": 0.0, "qb": 1.0},
            "weights": {"st": 1.0, "ae": 0.0},
        },
    )
    path = write_bundle(tmp_path / "fast.bundle", manifest, {"model.onnx": brightness_graph()})
    bundle = Bundle.open(path)
    assert bundle.manifest.model.input.resize == "area_fast"
    assert bundle.manifest == manifest.model_copy(update={"model": bundle.manifest.model})

    # map_st of the brightness graph is the mean of each 4x4 cell of the model input, so
    # the map shows which resize the Inspector ran: area_fast, not area.
    frame = np.random.default_rng(3).integers(0, 256, (2051, 2449), dtype=np.uint8)

    def expected_map(mode: str) -> np.ndarray:
        x = np.empty((3, 256, 256), np.uint8)
        to_model_input(frame, x, resize=mode)
        cells = x[0].astype(np.float32).reshape(64, 4, 64, 4).mean(axis=(1, 3))
        return 0.1 * (cells - 100.0) / 100.0

    with Inspector.open(bundle, device="cpu") as inspector:
        for _ in range(2):  # the second frame runs on the reused buffers
            result = inspector.inspect(frame)
            assert result.anomaly_map is not None
            got = result.anomaly_map[4:-4, 4:-4]
            np.testing.assert_allclose(got, expected_map("area_fast"), atol=1e-6)
    assert np.abs(got - expected_map("area")).max() > 1e-4
