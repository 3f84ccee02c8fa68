"""Choosing a tiling from the images and the smallest defect to catch
(``edge-ad train --min-defect-px N``), and what it costs per part.

A defect must cover :data:`MIN_DEFECT_CELLS` cells of the anomaly map (a cell is
:data:`~edge_sdk.runtime.tiling.MAP_CELL` model pixels) to stand out of it: EfficientAD's
maps are pooled to that cell, and a smaller defect is averaged into its neighbours. So the
scale (model pixels per image pixel) must be at least ``MIN_DEFECT_CELLS * MAP_CELL / N``.
Squeezed into the 256 px input, an image gets the scale of its longer side; where that is
enough, no tiling is suggested.

>>> choice = suggest_tiling([(1250, 500)] * 3, min_defect_px=6)
>>> choice.tiling.grid.scale, choice.tiles_per_image, choice.untiled_scale
(1.34, 24, 0.205)
>>> suggest_tiling([(256, 256)], min_defect_px=8).tiling is None
True
>>> suggest_tiling([(324, 270), (300, 103)], min_defect_px=8).tiling.grid
TileGrid(size=256, overlap=32, scale=1.0, enlarge_small=True)

Without a tiling, :func:`squeeze_note` says what squeezing costs where it costs much:

>>> print(squeeze_note([(1250, 500)] * 3))
untiled: a 500x1250 image is squeezed to 256x256 px (aspect 2.5:1 lost), 4.9 image px to \
a model px along its longer side, so a defect under about 39 px is averaged into its \
neighbours; --min-defect-px N tiles at the scale that shows an N px defect (--tiling 1.0: \
native resolution)
>>> squeeze_note([(300, 280)]) is None
True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from edge_sdk.runtime.tiling import MAP_CELL, TileGrid, Tiling, plan_regions

MIN_DEFECT_CELLS = 2
MAX_SCALE = 8.0
SQUEEZE_NOTE_SCALE = 0.5  # below it (a defect under 16 px unseen), train says so
SQUEEZE_NOTE_ASPECT = 2.0  # or a longer side over twice the shorter


@dataclass(frozen=True)
class TilingChoice:
    tiling: Tiling | None  # None: the squeezed image already shows the defect
    tiles_per_image: int  # for the median image size
    untiled_scale: float  # model px per image px without tiling, along the longer side
    message: str


def median_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The median height and the median width of ``sizes`` (height, width)."""
    return int(statistics.median(h for h, _ in sizes)), int(statistics.median(w for _, w in sizes))


def suggest_tiling(
    sizes: Sequence[tuple[int, int]], *, min_defect_px: float, size: int = 256, overlap: int = 32
) -> TilingChoice:
    """The tiling that shows a ``min_defect_px`` defect on images of ``sizes`` (height,
    width), or None where the squeezed image shows it already."""
    if min_defect_px <= 0 or not sizes:
        raise ValueError("the smallest defect and the image sizes must be given")
    height, width = median_size(sizes)
    untiled = round(size / max(height, width), 3)
    needed = MIN_DEFECT_CELLS * MAP_CELL / min_defect_px
    seen = f"a {min_defect_px:g} px defect"
    if untiled >= needed:
        return TilingChoice(
            None,
            1,
            untiled,
            f"{seen} is {min_defect_px * untiled:.1f} model px in a {width}x{height} image "
            f"squeezed to {size} px: no tiling needed",
        )
    scale = math.ceil(round(needed * 100, 6)) / 100  # hundredths, up
    if scale > MAX_SCALE:
        raise ValueError(
            f"{seen} needs {scale:g} model px per image px, more than {MAX_SCALE:g}: "
            f"use a camera or lens that resolves it"
        )
    # An image whose shorter side is under one tile at that scale is enlarged to one tile
    # (it is then seen finer than needed), rather than every image scaled up for it.
    small = min(min(h, w) for h, w in sizes) * scale < size
    grid = TileGrid(size=size, overlap=overlap, scale=scale, enlarge_small=small)
    tiling = Tiling(grid=grid)
    tiles = sum(len(p.tiles) for p in plan_regions(tiling, (height, width)))
    return TilingChoice(
        tiling,
        tiles,
        untiled,
        f"{seen} is {min_defect_px * untiled:.1f} model px in a {width}x{height} image "
        f"squeezed to {size} px, under the {MIN_DEFECT_CELLS * MAP_CELL} px the map "
        f"resolves: tiling at scale {scale:g} ({tiles} tiles of {size} px a part)",
    )


def squeeze_note(sizes: Sequence[tuple[int, int]], *, size: int = 256) -> str | None:
    """What squeezing images of ``sizes`` (height, width) into the ``size`` px input
    loses, when it loses much (a scale under :data:`SQUEEZE_NOTE_SCALE` along the longer
    side, or an aspect ratio over :data:`SQUEEZE_NOTE_ASPECT`); None otherwise."""
    if not sizes:
        return None
    height, width = median_size(sizes)
    longer, shorter = max(height, width), max(1, min(height, width))
    scale = size / longer
    aspect = longer / shorter
    if scale >= SQUEEZE_NOTE_SCALE and aspect <= SQUEEZE_NOTE_ASPECT:
        return None
    unseen = MIN_DEFECT_CELLS * MAP_CELL / scale
    lost = f" (aspect {aspect:.2g}:1 lost)" if aspect > SQUEEZE_NOTE_ASPECT else ""
    return (
        f"untiled: a {width}x{height} image is squeezed to {size}x{size} px{lost}, "
        f"{1 / scale:.2g} image px to a model px along its longer side, so a defect under "
        f"about {unseen:.0f} px is averaged into its neighbours; --min-defect-px N tiles at "
        f"the scale that shows an N px defect (--tiling 1.0: native resolution)"
    )
