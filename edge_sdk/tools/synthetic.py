"""Generated part images: a textured surface, and the same with a defect drawn on it.

They let the demo and the tests run on a fresh machine without any data set. The texture
is random but stationary, like a machined or cast surface under diffuse light.
"""

from __future__ import annotations

import cv2
import numpy as np


def good_part(rng: np.random.Generator, *, height: int = 256, width: int = 256) -> np.ndarray:
    """A grey uint8 image of a defect-free surface."""
    noise = rng.normal(0.0, 1.0, size=(height, width)).astype(np.float32)
    grain = cv2.GaussianBlur(noise, (0, 0), sigmaX=1.2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    # Fine machining marks plus a slow illumination gradient.
    marks = np.sin(xx * 0.35 + yy * 0.05 + phase)
    shade = (xx / width - 0.5) * rng.uniform(-20, 20)
    image = 128 + 18 * grain + 10 * marks + shade
    return np.clip(image, 0, 255).astype(np.uint8)


def defective_part(
    rng: np.random.Generator, *, height: int = 256, width: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """A surface with one defect (scratch, dent or stain) and its 0/255 mask."""
    image = good_part(rng, height=height, width=width)
    mask = np.zeros((height, width), dtype=np.uint8)
    kind = rng.integers(3)
    cx, cy = (
        int(v)
        for v in rng.integers(low=(width // 5, height // 5), high=(4 * width // 5, 4 * height // 5))
    )
    size = int(min(height, width) * rng.uniform(0.05, 0.12))
    if kind == 0:  # scratch
        angle = rng.uniform(0, np.pi)
        dx, dy = int(np.cos(angle) * size * 2), int(np.sin(angle) * size * 2)
        cv2.line(mask, (cx - dx, cy - dy), (cx + dx, cy + dy), 255, max(2, size // 6))
        value = 40
    elif kind == 1:  # dent
        cv2.circle(mask, (cx, cy), size, 255, -1)
        value = 220
    else:  # stain
        cv2.ellipse(mask, (cx, cy), (size, size // 2), float(rng.uniform(0, 180)), 0, 360, 255, -1)
        value = 70
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigmaX=1.5)
    blended = image.astype(np.float32) * (1 - soft) + value * soft
    return np.clip(blended, 0, 255).astype(np.uint8), mask
