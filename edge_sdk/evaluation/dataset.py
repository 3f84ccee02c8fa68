"""Test sets in the MVTec AD layout, and reading their images and masks.

    DATA/test/good/*.png                          good parts
    DATA/test/<defect_type>/*.png                 defective parts
    DATA/ground_truth/<defect_type>/<stem>_mask.png   0/255 masks at the image's size

`DATA` may also be the `test` folder itself (ground truth is then looked for beside it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_sdk.errors import EdgeADError
from edge_sdk.images import IMAGE_SUFFIXES, list_images, read_image

GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One test image: its defect type (None for a good part) and its mask file, if any."""

    path: Path
    defect_type: str | None = None
    mask_path: Path | None = None

    @property
    def is_defective(self) -> bool:
        return self.defect_type is not None


@dataclass(frozen=True)
class TestSet:
    """The images of a test split, good first, then each defect type in name order."""

    root: Path
    samples: list[Sample]
    missing_masks: list[Path] = field(default_factory=list)

    __test__ = False  # not a pytest test class, despite the name

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if not s.is_defective]

    @property
    def defective(self) -> list[Sample]:
        return [s for s in self.samples if s.is_defective]

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect_type for s in self.samples if s.defect_type is not None})


def _mask_for(truth: Path, defect_type: str, image: Path) -> Path | None:
    for name in (f"{image.stem}_mask.png", f"{image.stem}.png"):
        candidate = truth / defect_type / name
        if candidate.is_file():
            return candidate
    return None


def find_test_set(data: str | os.PathLike[str]) -> TestSet:
    """The samples of an MVTec-layout data set (its `test` split) or of a `test` folder."""
    root = Path(data).expanduser().absolute()
    test = root / "test" if (root / "test").is_dir() else root
    if not (test / GOOD).is_dir():
        raise EdgeADError(
            f"{root}: expected the MVTec AD layout, test/good/ and test/<defect_type>/ "
            f"(found no folder {test / GOOD})"
        )
    truth = test.parent / "ground_truth"
    samples = [Sample(path) for path in list_images(test / GOOD)]
    missing: list[Path] = []
    for folder in sorted(p for p in test.iterdir() if p.is_dir() and p.name != GOOD):
        for path in list_images(folder):
            mask = _mask_for(truth, folder.name, path)
            if mask is None:
                missing.append(path)
            samples.append(Sample(path, folder.name, mask))
    if not samples:
        raise EdgeADError(f"{test}: no images in good/ or any defect folder")
    return TestSet(root=root, samples=samples, missing_masks=missing)


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask as bool HxW; it must have the image's size."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise EdgeADError(f"{path}: cannot read mask image")
    if mask.shape != shape:
        raise EdgeADError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image is {shape[1]}x{shape[0]}"
        )
    # Above mid-grey, so anti-aliased or JPEG-saved masks binarise as drawn.
    return np.asarray(mask > 127)


__all__ = [
    "IMAGE_SUFFIXES",
    "Sample",
    "TestSet",
    "find_test_set",
    "list_images",
    "read_image",
    "read_mask",
]
