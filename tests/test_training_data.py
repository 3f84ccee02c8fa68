"""Training data: finding and decoding good images, the validation split, augmentation,
penalty photos. Real image files written with OpenCV; the shared data sets when present.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the training extra is not installed")

import cv2
import numpy as np
import torch
from conftest import data_set

from edge_sdk.errors import ConfigError
from edge_sdk.runtime.preprocess import to_model_input
from edge_sdk.training.data import (
    PenaltyImages,
    SampleOrder,
    augment_for_autoencoder,
    find_good_images,
    jitter,
    load_training_data,
    read_image,
    split_validation,
    step_rng,
)
from edge_sdk.training.recipe import INPUT_RESIZE


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def _grey(h: int, w: int, value: int) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 255, size=(h, w), dtype=np.uint8)


def _colour(h: int, w: int, value: int) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("n", [2, 3, 7, 10, 50, 761])
def test_split_is_deterministic_disjoint_and_complete(n: int) -> None:
    a = split_validation(n, fraction=0.1, seed=3)
    b = split_validation(n, fraction=0.1, seed=3)
    assert a == b
    assert not set(a.train) & set(a.validation)
    assert sorted(a.train + a.validation) == list(range(n))
    assert a.train and a.validation
    assert len(a.validation) >= min(5, n // 2)


def test_split_size_and_seed() -> None:
    split = split_validation(761, fraction=0.1, seed=0)
    assert len(split.validation) == 77  # ceil(76.1)
    assert split_validation(761, fraction=0.1, seed=1).validation != split.validation


def test_split_refuses_bad_input() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        split_validation(1)
    with pytest.raises(ConfigError, match="fraction"):
        split_validation(10, fraction=0.0)


def test_plain_folder_recursive_sorted_mixed_images(tmp_path: Path) -> None:
    root = tmp_path / "parts"
    _write(root / "b" / "wide.png", _grey(90, 300, 1))  # non-square grey
    _write(root / "a.jpg", _colour(400, 120, 2))  # non-square colour
    _write(root / "c" / "d" / "square.bmp", _grey(64, 64, 3))
    (root / "notes.txt").write_text("not an image")
    found = find_good_images(root)
    assert found.layout == "folder"
    assert found.relative() == ["a.jpg", "b/wide.png", "c/d/square.bmp"]
    data = load_training_data(root, val_fraction=0.1, seed=0)
    assert len(data.split.validation) == 1 and len(data.split.train) == 2
    assert data.train_images.shape == (2, 3, 256, 256)
    assert data.train_images.dtype == np.uint8
    # Exactly the runtime's preprocessing of each training file.
    for row, index in enumerate(data.split.train):
        expected = np.zeros((3, 256, 256), np.uint8)
        to_model_input(read_image(found.files[index]), expected, resize=INPUT_RESIZE)
        np.testing.assert_array_equal(data.train_images[row], expected)


def test_camera_sized_images_are_resized_with_the_recipe_mode(tmp_path: Path) -> None:
    # Large enough (>= 512 px a side) that area_fast and area give different pixels.
    images = [_grey(1100, 1300, i) for i in range(3)]
    for i, image in enumerate(images):
        _write(tmp_path / "parts" / f"{i}.png", image)
    data = load_training_data(tmp_path / "parts", val_fraction=0.1, seed=0)
    assert INPUT_RESIZE == "area_fast"
    for row, index in enumerate(data.split.train):
        expected = np.zeros((3, 256, 256), np.uint8)
        to_model_input(images[index], expected, resize=INPUT_RESIZE)
        np.testing.assert_array_equal(data.train_images[row], expected)
        to_model_input(images[index], expected, resize="area")
        assert not np.array_equal(data.train_images[row], expected)
    again = load_training_data(tmp_path / "parts", val_fraction=0.1, seed=0, resize="area")
    np.testing.assert_array_equal(again.train_images[-1], expected)


def test_grey_stays_grey_and_colour_is_rgb(tmp_path: Path) -> None:
    grey = read_image(_write(tmp_path / "g.png", _grey(20, 30, 4)))
    assert grey.shape == (20, 30)
    colour = np.zeros((10, 10, 3), np.uint8)
    colour[:, :, 0] = 200  # blue in OpenCV's BGR order
    loaded = read_image(_write(tmp_path / "c.png", colour))
    out = np.zeros((3, 256, 256), np.uint8)
    to_model_input(loaded, out)
    assert out[2].min() == 200 and out[0].max() == 0  # blue lands in the B (last) plane


def test_mvtec_layout_uses_train_good_only(tmp_path: Path) -> None:
    root = tmp_path / "set"
    for i in range(6):
        _write(root / "train" / "good" / f"{i:03d}.png", _grey(100, 180, i))
    _write(root / "test" / "good" / "t.png", _grey(100, 180, 50))
    _write(root / "test" / "crack" / "x.png", _grey(100, 180, 51))
    _write(root / "ground_truth" / "crack" / "x_mask.png", _grey(100, 180, 52))
    found = find_good_images(root)
    assert found.layout == "mvtec"
    assert found.relative() == [f"{i:03d}.png" for i in range(6)]
    data = load_training_data(root, val_fraction=0.1, seed=0)
    assert len(data.split.validation) == 3 and data.train_images.shape[0] == 3
    assert all("train/good" in p.as_posix() for p in data.validation_files)


def test_missing_or_empty_folders_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder") as err:
        find_good_images(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images found"):
        find_good_images(tmp_path / "empty")
    (tmp_path / "mv" / "train" / "good").mkdir(parents=True)
    with pytest.raises(ConfigError, match="train/good holds no images"):
        find_good_images(tmp_path / "mv")
    _write(tmp_path / "testonly" / "test" / "crack" / "a.png", _grey(10, 10, 0))
    with pytest.raises(ConfigError, match="no train/good"):
        find_good_images(tmp_path / "testonly")
    with pytest.raises(ConfigError, match="no such folder"):
        PenaltyImages(tmp_path / "photos")


def test_undecodable_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"broken\.png"):
        read_image(bad)


def test_sample_order_visits_every_image_each_epoch() -> None:
    order = SampleOrder(7, batch_size=1, seed=0)
    epoch0 = [order.indices(s)[0] for s in range(7)]
    epoch1 = [order.indices(s)[0] for s in range(7, 14)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(7))
    assert epoch0 != epoch1
    # A pure function of the step: a fresh object (a resumed run) agrees.
    assert SampleOrder(7, batch_size=1, seed=0).indices(9) == order.indices(9)
    assert SampleOrder(7, batch_size=3, seed=0).indices(1) == [
        order.indices(s)[0] for s in (3, 4, 5)
    ]


def test_jitter_matches_its_definition() -> None:
    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.uniform(0, 255, size=(3, 8, 8)).astype(np.float32))
    torch.testing.assert_close(jitter(rgb, "brightness", 1.1), (rgb * 1.1).clamp(0, 255))
    grey_mean = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).mean()
    torch.testing.assert_close(
        jitter(rgb, "contrast", 0.8), (0.8 * rgb + 0.2 * grey_mean).clamp(0, 255)
    )
    grey = rgb[:1].expand(3, -1, -1).clone()
    # Saturation does nothing to a grey image (its channels are equal).
    torch.testing.assert_close(jitter(grey, "saturation", 1.2), grey, atol=1e-3, rtol=1e-5)
    assert not torch.allclose(jitter(rgb, "saturation", 1.2), rgb)


def test_autoencoder_augmentation_is_reproducible_per_step() -> None:
    batch = torch.full((2, 3, 16, 16), 100.0)
    a = augment_for_autoencoder(batch, step_rng(0, 5))
    b = augment_for_autoencoder(batch, step_rng(0, 5))
    torch.testing.assert_close(a, b)
    assert a.shape == batch.shape and float(a.min()) >= 80.0 and float(a.max()) <= 120.0


def test_penalty_images_are_random_crops_at_model_size(tmp_path: Path) -> None:
    _write(tmp_path / "photos" / "wide.jpg", _colour(288, 384, 1))
    _write(tmp_path / "photos" / "sub" / "tall.png", _grey(500, 300, 2))
    photos = PenaltyImages(tmp_path / "photos")
    assert len(photos) == 2
    first = photos.draw(step_rng(0, 1), 3)
    assert first.shape == (3, 3, 256, 256) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, photos.draw(step_rng(0, 1), 3))
    assert not np.array_equal(first, photos.draw(step_rng(0, 2), 3))


def test_real_magnetic_tile_layout() -> None:
    tiles = data_set("magnetic_tile")
    found = find_good_images(tiles)
    assert found.layout == "mvtec" and len(found.files) == 761
    split = split_validation(len(found.files), fraction=0.1, seed=0)
    sizes = {read_image(found.files[i]).shape for i in split.validation[:5]}
    assert all(len(s) == 2 for s in sizes)  # grey JPEGs stay single-channel
