"""Turning a camera image into the graph's input: resize and channel order, nothing else.

The graph scales uint8 to float and applies the ImageNet normalisation itself, so the
host does the least work possible and training uses this same function.

Resize modes (``model.input.resize`` in the manifest):

- ``area``: OpenCV's INTER_AREA, a box average over each output pixel's footprint.
  Antialiased, but it costs 6 to 10 ms on a 5 MP mono frame (benchmarks/resize.py).
- ``area_fast``: :func:`resize_area_fast`, a fraction of a grey level from ``area`` on
  average and about 6x faster on a 5 MP frame (4x in BGR); identical below 512 px.
- ``linear``: INTER_LINEAR; the fastest, but it aliases badly at large downscales.

A bundle is only valid with the mode it was trained and calibrated with.
"""

from __future__ import annotations

from typing import get_args

import cv2
import numpy as np

from edge_sdk.errors import EdgeADError
from edge_sdk.runtime.manifest import ResizeMode

RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


class ImageError(EdgeADError):
    """An image the model cannot take (wrong dtype, shape or channel count)."""


class Scratch:
    """Buffers that resizing reuses from call to call, so frames of one size do not
    allocate on the hot path. Not thread-safe: give each thread its own.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
        """The buffer kept under ``name``: a new one if shape or dtype changed."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype=dtype)
        return buf


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


def resize_area_fast(
    image: np.ndarray, size: tuple[int, int], *, scratch: Scratch | None = None
) -> np.ndarray:
    """Downscale `image` to `size` (width, height) close to INTER_AREA, much faster.

    INTER_AREA is slow unless the scale is a whole number in both axes, and fastest (SIMD)
    at exactly 2. So: halve with 2x2 INTER_AREA while the image stays at least twice
    `size`, resample bilinearly to the nearest whole multiple k >= 2 of `size` below it
    (a ratio of at most 1.5, where bilinear barely aliases), then average k x k boxes.
    Images smaller than twice `size` in either axis (including any upscaling) go to
    INTER_AREA itself, which is cheap at that size. Takes any uint8 HxW or HxWxC image;
    returns a new array, or a buffer of `scratch`.

    >>> frame = np.full((2048, 2448), 100, dtype=np.uint8)
    >>> small = resize_area_fast(frame, (256, 256))
    >>> small.shape, int(small.min()), int(small.max())
    ((256, 256), 100, 100)
    """
    if scratch is None:
        scratch = Scratch()
    width, height = size
    h, w = image.shape[:2]
    channels = image.shape[2:]
    if w < 2 * width or h < 2 * height:
        out = scratch.get("out", (height, width, *channels))
        return cv2.resize(image, size, dst=out, interpolation=cv2.INTER_AREA)
    levels = 0
    while (w >> (levels + 1)) >= 2 * width and (h >> (levels + 1)) >= 2 * height:
        levels += 1
    # The 2x2 steps need sides divisible by 2**levels: crop the remainder (at most
    # 2**levels - 1 pixels, split between both sides) and restore the exact geometry
    # in the bilinear step, so that the output still covers the whole frame.
    mask = (1 << levels) - 1
    x0, y0 = (w & mask) // 2, (h & mask) // 2
    small = image[y0 : y0 + (h & ~mask), x0 : x0 + (w & ~mask)]
    for level in range(levels):
        half = (small.shape[1] // 2, small.shape[0] // 2)
        dst = scratch.get(f"half{level}", (half[1], half[0], *channels))
        small = cv2.resize(small, half, dst=dst, interpolation=cv2.INTER_AREA)
    hs, ws = small.shape[:2]
    grid = ((ws // width) * width, (hs // height) * height)
    if (ws, hs) != grid:
        dst = scratch.get("grid", (grid[1], grid[0], *channels))
        if (w & mask) or (h & mask):
            # Grid pixel centres mapped onto the frame's, through the crop and the halvings.
            step = float(1 << levels)
            sx, sy = w / grid[0], h / grid[1]
            matrix = np.array(
                [
                    [sx / step, 0.0, (0.5 * sx - x0) / step - 0.5],
                    [0.0, sy / step, (0.5 * sy - y0) / step - 0.5],
                ]
            )
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            small = cv2.warpAffine(
                small, matrix, grid, dst=dst, flags=flags, borderMode=cv2.BORDER_REPLICATE
            )
        else:
            small = cv2.resize(small, grid, dst=dst, interpolation=cv2.INTER_LINEAR)
    # Each 2x2 step rounds halves up: 1/8 grey level too bright on average. The last box
    # average runs on eight times the values (3 fraction bits), so that its one rounding
    # takes that bias out; at most 3/8, so that flat areas, which the steps leave exact,
    # keep their value.
    bias = 0.125 * min(levels, 3)
    fine = scratch.get("fine", small.shape, np.uint16)
    np.left_shift(small, 3, out=fine, dtype=np.uint16)
    averaged = scratch.get("averaged", (height, width, *channels), np.uint16)
    averaged = cv2.resize(fine, size, dst=averaged, interpolation=cv2.INTER_AREA)
    out = scratch.get("out", (height, width, *channels))
    return cv2.convertScaleAbs(averaged, dst=out, alpha=0.125, beta=-bias)


def to_model_input(
    image: np.ndarray,
    out: np.ndarray,
    *,
    resize: str = "area",
    scratch: Scratch | None = None,
) -> None:
    """Write `image` (grey or BGR/BGRA uint8, any size) into `out` ([3,H,W] uint8, RGB).

    `resize` is one of `RESIZE_MODES`; `scratch` optionally keeps the resize buffers
    between calls, so the hot path does not allocate.

    >>> out = np.empty((3, 256, 256), dtype=np.uint8)
    >>> bgr = np.zeros((600, 800, 3), dtype=np.uint8)
    >>> bgr[:, :, 2] = 200  # red
    >>> to_model_input(bgr, out, resize="area_fast")
    >>> [int(plane.mean()) for plane in out]
    [200, 0, 0]
    """
    check_image(image)
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r}: expected one of {RESIZE_MODES}")
    _, h, w = out.shape
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if resize == "area_fast":
        # BGRA keeps its alpha here: slicing it off first would make OpenCV copy the frame.
        resized = resize_area_fast(image, (w, h), scratch=scratch)
    elif image.ndim == 2:
        grey = None if scratch is None else scratch.get("out", (h, w))
        resized = cv2.resize(image, (w, h), dst=grey, interpolation=_INTERPOLATION[resize])
    else:
        resized = cv2.resize(image[:, :, :3], (w, h), interpolation=_INTERPOLATION[resize])
    if resized.ndim == 2:
        out[:] = resized  # broadcast to the three channels the ImageNet backbone expects
        return
    # BGR (OpenCV's order) to RGB planes.
    out[0] = resized[:, :, 2]
    out[1] = resized[:, :, 1]
    out[2] = resized[:, :, 0]
