"""Training data: good images of a part, the held-out validation split, the autoencoder's
augmentation and the penalty photos.

Images go through :func:`edge_sdk.runtime.preprocess.to_model_input`, the function the runtime
uses, so the networks train on exactly the pixels the line will feed them (resized to
256x256 as the bundle's ``model.input.resize`` says, grey replicated to three channels,
BGR -> RGB). The training images are decoded
once and kept as uint8 (196 kB each at 256x256); the validation images are read again
from disk for calibration, at their own size, as the runtime would see them.

Randomness is a function of ``(seed, step)`` (see :func:`step_rng`), never of a running
generator, so a run resumed from a checkpoint draws exactly what an uninterrupted run
would have drawn, without any generator state to save.

>>> split = split_validation(100, fraction=0.1, seed=0)
>>> split.validation
(1, 3, 11, 18, 40, 41, 43, 46, 80, 83)
>>> len(split.train)
90
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from edge_sdk.errors import ConfigError
from edge_sdk.images import IMAGE_SUFFIXES, list_images, read_image
from edge_sdk.runtime.preprocess import to_model_input
from edge_sdk.runtime.tiling import Tiling
from edge_sdk.training.networks import IMAGE_SIZE
from edge_sdk.training.recipe import INPUT_RESIZE

logger = logging.getLogger(__name__)

# A validation split smaller than this gives quantiles and a threshold that mean little;
# the reference (and the MVTec paper) hold out 10 %.
MIN_VALIDATION_IMAGES = 5
# ColorJitter(0.2) of the reference: a factor drawn uniformly from 0.8..1.2.
JITTER = 0.2
# The reference turns 30 % of its penalty photos grey (RandomGrayscale(0.3)).
PENALTY_GREY_PROBABILITY = 0.3
# Kept apart so that the data order, the augmentation and dropout draw independent streams.
_ORDER_STREAM, _STEP_STREAM, _SPLIT_STREAM = 0x0D, 0x57, 0x5B

Layout = Literal["mvtec", "folder"]


@dataclass(frozen=True)
class ImageFiles:
    """The good training images found under a data folder, sorted by relative path."""

    root: Path
    layout: Layout
    files: tuple[Path, ...]

    def relative(self) -> list[str]:
        """File names relative to the folder the images were found in, POSIX style."""
        base = self.root / "train" / "good" if self.layout == "mvtec" else self.root
        return [p.relative_to(base).as_posix() for p in self.files]

    def fingerprint(self) -> str:
        """sha256 of the relative names and sizes: a checkpoint of another data set is refused."""
        digest = hashlib.sha256()
        for name, path in zip(self.relative(), self.files, strict=True):
            digest.update(f"{name}\0{path.stat().st_size}\n".encode())
        return digest.hexdigest()


def find_good_images(data: str | Path) -> ImageFiles:
    """The good images of a data set: ``DATA/train/good/*`` (MVTec layout) or every image
    under ``DATA`` (a plain folder). Raises :class:`ConfigError` naming the folder when it
    is missing or holds no images.
    """
    root = Path(data).expanduser().absolute()
    if not root.is_dir():
        raise ConfigError(f"training data {root}: no such folder")
    good = root / "train" / "good"
    if good.is_dir():
        files = list_images(good)
        if not files:
            raise ConfigError(f"training data {root}: MVTec layout, but {good} holds no images")
        return ImageFiles(root, "mvtec", tuple(files))
    if (root / "test").is_dir() or (root / "ground_truth").is_dir():
        # A plain-folder walk would train on the defective test images.
        raise ConfigError(
            f"training data {root}: has test/ or ground_truth/ but no train/good/; point at a "
            f"folder of good images, or at an MVTec-style set with train/good/"
        )
    files = list_images(root)
    if not files:
        raise ConfigError(
            f"training data {root}: no images found (looked recursively for "
            f"{', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return ImageFiles(root, "folder", tuple(files))


@dataclass(frozen=True)
class ValidationSplit:
    """Indices (into the sorted file list) used for training and held out for calibration."""

    train: tuple[int, ...]
    validation: tuple[int, ...]
    fraction: float
    seed: int


def split_validation(n: int, *, fraction: float = 0.1, seed: int = 0) -> ValidationSplit:
    """Hold out ``ceil(fraction * n)`` images (at least a few, at most half) for calibration.

    Deterministic in ``(n, fraction, seed)``; the two parts never overlap. The held-out
    images set the map quantiles and the threshold only, so those numbers never come from
    images the networks were fitted to, nor from test images.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction: expected a value in (0, 1), found {fraction}")
    if n < 2:
        raise ConfigError(
            f"need at least 2 good images (one to train on, one to calibrate), found {n}"
        )
    n_val = max(math.ceil(fraction * n), min(MIN_VALIDATION_IMAGES, n // 2))
    n_val = min(n_val, n - 1)
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n)
    validation = tuple(sorted(int(i) for i in order[:n_val]))
    train = tuple(sorted(int(i) for i in order[n_val:]))
    return ValidationSplit(train=train, validation=validation, fraction=fraction, seed=seed)


def load_model_inputs(
    files: Sequence[Path], *, resize: str = INPUT_RESIZE, tiling: Tiling | None = None
) -> np.ndarray:
    """Decode and resize ``files`` to the model input: uint8 [N,3,256,256] RGB. With
    ``tiling``, every tile of every file instead, cut as the runtime cuts them."""
    if tiling is not None:
        return _load_tiles(files, resize, tiling)
    out = np.empty((len(files), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, path in enumerate(files):
        to_model_input(read_image(path), out[i], resize=resize)
    return out


def _load_tiles(files: Sequence[Path], resize: str, tiling: Tiling) -> np.ndarray:
    from edge_sdk.runtime.tiled import cut_tiles
    from edge_sdk.runtime.tiling import TilingError, plan_regions

    tiles = []
    for path in files:
        image = read_image(path)
        try:
            plans = plan_regions(tiling, image.shape)
        except TilingError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        tiles.append(cut_tiles(image, plans, tiling.grid.size, resize))
    return np.concatenate(tiles) if tiles else np.empty((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


def iter_images(files: Sequence[Path]) -> Iterator[np.ndarray]:
    """The decoded images, one at a time, at their own size (for calibration)."""
    for path in files:
        yield read_image(path)


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator for everything drawn at ``step``: augmentation and penalty photos."""
    return np.random.default_rng([seed, _STEP_STREAM, step])


class SampleOrder:
    """Which training images step ``s`` sees: a fresh shuffle every epoch, as the
    reference's ``DataLoader(shuffle=True)``, but a pure function of ``(seed, step)``.
    """

    def __init__(self, n: int, *, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch = -1
        self._perm = np.arange(n)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, _ORDER_STREAM, epoch])
            self._perm, self._epoch = rng.permutation(self.n), epoch
        return self._perm

    def indices(self, step: int) -> list[int]:
        """The indices of the images in the batch of ``step``."""
        out = []
        for k in range(step * self.batch_size, (step + 1) * self.batch_size):
            out.append(int(self._permutation(k // self.n)[k % self.n]))
        return out


def _grey(image: torch.Tensor) -> torch.Tensor:
    # ITU-R 601 weights as PIL's convert("L") (the reference jitters PIL images); they sum
    # to exactly 1, so a grey image is its own grey version.
    r, g, b = image[0], image[1], image[2]
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(0)


def jitter(image: torch.Tensor, kind: str, factor: float) -> torch.Tensor:
    """torchvision's ColorJitter of one kind on a float RGB [3,H,W] image in 0..255.

    ``brightness`` scales, ``contrast`` blends with the mean grey level, ``saturation``
    blends with the grey image (a no-op on grey images, whose channels are equal).
    """
    if kind == "brightness":
        out = image * factor
    elif kind == "contrast":
        out = factor * image + (1.0 - factor) * _grey(image).mean()
    elif kind == "saturation":
        out = factor * image + (1.0 - factor) * _grey(image)
    else:
        raise ValueError(f"unknown jitter {kind!r}")
    return out.clamp(0.0, 255.0)


JITTER_KINDS = ("brightness", "contrast", "saturation")


def augment_for_autoencoder(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The reference's autoencoder augmentation: per image, one of brightness, contrast or
    saturation jitter with a factor from 0.8..1.2. Takes and returns float [N,3,H,W] 0..255.
    """
    out = torch.empty_like(batch)
    for i in range(batch.shape[0]):
        kind = JITTER_KINDS[int(rng.integers(len(JITTER_KINDS)))]
        factor = float(rng.uniform(1.0 - JITTER, 1.0 + JITTER))
        out[i] = jitter(batch[i], kind, factor)
    return out


class PenaltyImages:
    """Generic photos for the student's penalty term (ImageNet in the paper).

    Each draw picks a photo, resizes its short side to 256, cuts a random 256x256 square
    and, with probability 0.3, turns it grey (the reference's RandomGrayscale(0.3)).
    Photos are decoded when drawn: a folder of them need not fit in memory.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser().absolute()
        if not self.folder.is_dir():
            raise ConfigError(f"penalty images {self.folder}: no such folder")
        self.files = tuple(list_images(self.folder))
        if not self.files:
            raise ConfigError(f"penalty images {self.folder}: no images found (recursively)")

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(f"{path.relative_to(self.folder).as_posix()}\n".encode())
        return digest.hexdigest()

    def draw(self, rng: np.random.Generator, count: int = 1) -> np.ndarray:
        """``count`` penalty images as uint8 [count,3,256,256] RGB."""
        out = np.empty((count, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        for i in range(count):
            image = read_image(self.files[int(rng.integers(len(self.files)))])
            h, w = image.shape[:2]
            scale = IMAGE_SIZE / min(h, w)
            size = (max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            top = int(rng.integers(size[1] - IMAGE_SIZE + 1))
            left = int(rng.integers(size[0] - IMAGE_SIZE + 1))
            crop = np.ascontiguousarray(image[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE])
            if crop.ndim == 3 and crop.shape[2] >= 3 and rng.random() < PENALTY_GREY_PROBABILITY:
                crop = cv2.cvtColor(crop[:, :, :3], cv2.COLOR_BGR2GRAY)
            to_model_input(crop, out[i])  # already 256x256: every resize mode copies it
        return out


@dataclass(frozen=True)
class TrainingData:
    """Everything a training run reads: the images, the split and where they came from."""

    source: ImageFiles
    split: ValidationSplit
    train_images: np.ndarray  # uint8 [N,3,256,256] RGB, the training part only (or its tiles)

    @property
    def validation_files(self) -> tuple[Path, ...]:
        return tuple(self.source.files[i] for i in self.split.validation)

    @property
    def train_files(self) -> tuple[Path, ...]:
        return tuple(self.source.files[i] for i in self.split.train)

    def validation_names(self) -> list[str]:
        names = self.source.relative()
        return [names[i] for i in self.split.validation]


def load_training_data(
    data: str | Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    resize: str = INPUT_RESIZE,
    tiling: Tiling | None = None,
) -> TrainingData:
    """Find the good images under ``data``, split off the validation images and decode the
    rest (with ``tiling``: cut into their tiles, each a training image)."""
    source = find_good_images(data)
    split = split_validation(len(source.files), fraction=val_fraction, seed=seed)
    logger.info(
        "%s (%s layout): %d good images, %d for training, %d held out for calibration",
        source.root,
        source.layout,
        len(source.files),
        len(split.train),
        len(split.validation),
    )
    images = load_model_inputs([source.files[i] for i in split.train], resize=resize, tiling=tiling)
    return TrainingData(source=source, split=split, train_images=images)
