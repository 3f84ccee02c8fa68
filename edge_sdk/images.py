"""Image files: the suffixes edge-ad reads, listing them in a folder, and reading one.

One list for every part (training, evaluation, the folder source, `edge-ad inspect`), so
a file that one command reads is never skipped by another.

>>> sorted(IMAGE_SUFFIXES)[:3]
['.bmp', '.jpeg', '.jpg']
>>> list_images("/nonexistent")
Traceback (most recent call last):
...
edge_sdk.errors.EdgeADError: /nonexistent: no such folder of images
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge_sdk.errors import ConfigError, EdgeADError

# What OpenCV decodes in every build we ship against.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp"}
)


def is_image(path: Path) -> bool:
    """A file whose suffix (any case) is one of `IMAGE_SUFFIXES`."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """The image files in `folder` (and below it, unless `recursive` is False), sorted by
    their path relative to `folder`: the same order on every machine, which the training
    split and the data set's fingerprint rely on."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise EdgeADError(f"{root}: no such folder of images")
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted((p for p in found if is_image(p)), key=lambda p: p.relative_to(root).as_posix())


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as a camera would give it: grey stays grey, colour is BGR. Raises
    ConfigError (an EdgeADError) naming the file when it cannot be read or decoded."""
    # np.fromfile + imdecode rather than imread: imread fails on non-ASCII paths on Windows.
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ConfigError(f"cannot read image {path}: {exc}") from exc
    image = cv2.imdecode(raw, cv2.IMREAD_ANYCOLOR) if raw.size else None
    if image is None:
        raise ConfigError(f"cannot decode image {path}: not an image, or a format OpenCV lacks")
    return image


__all__ = ["IMAGE_SUFFIXES", "is_image", "list_images", "read_image"]
