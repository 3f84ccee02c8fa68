"""Turning a camera image into the graph's input: resize and channel order, nothing else.

The graph scales uint8 to float and applies the ImageNet normalisation itself, so the
host does the least work possible and training uses this same function.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_sdk.errors import EdgeADError

_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


class ImageError(EdgeADError):
    """An image the model cannot take (wrong dtype, shape or channel count)."""


def check_image(image: np.ndarray) -> None:
    """Raise `ImageError` unless `image` is uint8 HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA)."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ImageError(f"expected HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"empty image, shape {image.shape}")


def to_model_input(
    image: np.ndarray, out: np.ndarray, *, resize: str = "area", scratch: np.ndarray | None = None
) -> None:
    """Write `image` (grey or BGR/BGRA uint8, any size) into `out` ([3,H,W] uint8, RGB).

    `scratch` is an optional HxW uint8 buffer reused for grey images to avoid an allocation.
    """
    check_image(image)
    _, h, w = out.shape
    interp = _INTERPOLATION[resize]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        grey = cv2.resize(image, (w, h), dst=scratch, interpolation=interp)
        out[:] = grey  # broadcast to the three channels the ImageNet backbone expects
        return
    resized = cv2.resize(image[:, :, :3], (w, h), interpolation=interp)
    # BGR (OpenCV's order) to RGB planes.
    out[0] = resized[:, :, 2]
    out[1] = resized[:, :, 1]
    out[2] = resized[:, :, 0]
