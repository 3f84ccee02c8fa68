"""The photos a teacher is distilled on: random, augmented backbone windows cut from a folder
of generic photos (random scale, horizontal flip, grey 30 % of the time, since lines often run
mono cameras), decoded when drawn so the folder need not fit in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import torch

from edge_sdk.errors import ConfigError
from edge_sdk.training.data import list_images, read_image
from edge_sdk.training.teacher_targets import WINDOW

__all__ = ["GREY_PROBABILITY", "SCALE_RANGE", "Photos"]

GREY_PROBABILITY = 0.3
# The photo's short side is scaled to this many times the backbone window, at random.
SCALE_RANGE = (1.0, 1.4)


class Photos:
    """Random backbone windows (WINDOW px square) cut from a folder of photos; the PDN's
    input is their centre (:func:`edge_sdk.training.teacher.pdn_crop`)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser().absolute()
        if not self.folder.is_dir():
            raise ConfigError(
                f"photos {self.folder}: no such folder (point --photos at a folder of generic "
                f"photos, e.g. ImageNet samples)"
            )
        self.files = tuple(list_images(self.folder))
        if not self.files:
            raise ConfigError(f"photos {self.folder}: no images found (looked recursively)")

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(
                f"{path.relative_to(self.folder).as_posix()}\0{path.stat().st_size}\n".encode()
            )
        return digest.hexdigest()

    def draw(self, rng: np.random.Generator, count: int) -> torch.Tensor:
        """``count`` augmented windows, float RGB 0..1, [count,3,WINDOW,WINDOW]."""
        out = np.empty((count, WINDOW, WINDOW, 3), dtype=np.uint8)
        for i in range(count):
            image = read_image(self.files[int(rng.integers(len(self.files)))])
            if image.ndim == 3 and image.shape[2] == 4:
                image = image[:, :, :3]
            if image.ndim == 3 and image.shape[2] == 1:
                image = image[:, :, 0]
            h, w = image.shape[:2]
            scale = WINDOW * rng.uniform(*SCALE_RANGE) / min(h, w)
            size = (max(WINDOW, round(w * scale)), max(WINDOW, round(h * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interp)
            top = int(rng.integers(size[1] - WINDOW + 1))
            left = int(rng.integers(size[0] - WINDOW + 1))
            crop = image[top : top + WINDOW, left : left + WINDOW]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if crop.ndim == 3 and rng.random() < GREY_PROBABILITY:
                crop = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_BGR2GRAY)
            out[i] = crop[:, :, None] if crop.ndim == 2 else crop[:, :, ::-1]  # BGR -> RGB
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
