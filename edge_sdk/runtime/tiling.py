"""Native resolution: a bundle's regions of interest in the camera frame, each cut into
overlapping tiles at the model's input size, and the tiles' maps stitched back into one
map per region (issue 16).

A bundle without ``model.input.tiling`` squeezes the whole frame into the model input, as
before. With it, each region is cropped from the frame, scaled by ``grid.scale`` (model
pixels per frame pixel: 1.0 is native resolution), and covered by ``grid.size`` tiles that
overlap by ``grid.overlap`` pixels; the last tile of a row or column is moved back to end
at the region's edge, so every tile lies inside the region and none is padded. A region
too small for one tile at that scale is an error, or with ``grid.enlarge_small`` (parts
whose size varies) is scaled up until its shorter side is one tile.

Maps are stitched on a grid of :data:`MAP_CELL` model pixels (the resolution of
EfficientAD's padded maps: 64 cells for a 256 px tile), which is why sizes and overlaps are
multiples of it. Where tiles overlap, their maps are blended with weights that fall
linearly to the tile's edge across the overlap, so no seam is left where one tile's border
effects meet another's interior; a map that agrees across tiles is returned exactly.

The regions are parts of one inspected part: the part's score is the highest of any
region's, and its verdict is one.

>>> tile_origins(600, 256, 32)
[0, 172, 344]
>>> grid = TileGrid(size=256, overlap=32)
>>> [len(p.tiles) for p in plan_regions(Tiling(grid=grid), (1250, 500))]
[18]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_sdk.errors import EdgeADError

MAP_CELL = 4  # model pixels per cell of the stitched map


class TilingError(EdgeADError):
    """A frame the bundle's tiling cannot be applied to (smaller than declared)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Region(_Frozen):
    """A region of interest in frame pixels; None for width/height: to the frame's edge."""

    name: str = Field("part", min_length=1)
    x: int = Field(0, ge=0)
    y: int = Field(0, ge=0)
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)


class TileGrid(_Frozen):
    size: int = Field(256, gt=0)  # tile side in model pixels: the model's input size
    overlap: int = Field(32, gt=0)  # model pixels shared by neighbouring tiles
    scale: float = Field(1.0, gt=0, le=8)  # model pixels per frame pixel
    # A region whose shorter side is under one tile at ``scale``: an error (False), or
    # enlarged until that side is one tile (True: parts whose size varies, some small).
    enlarge_small: bool = False

    @model_validator(mode="after")
    def _cells(self) -> TileGrid:
        for name in ("size", "overlap"):
            if getattr(self, name) % MAP_CELL:
                raise ValueError(
                    f"tiling.grid.{name} {getattr(self, name)}: must be a multiple of "
                    f"{MAP_CELL} px (the map's cell)"
                )
        if self.overlap >= self.size // 2:
            raise ValueError(
                f"tiling.grid.overlap {self.overlap}: must be under half the tile size "
                f"({self.size})"
            )
        return self


class Tiling(_Frozen):
    """``model.input.tiling``: where the part is in the frame and how it is tiled."""

    # The frame size the regions were drawn on (height, width); frames must be at least
    # this large. None: any frame, the regions clipped to it (then whole-frame regions).
    frame: tuple[int, int] | None = None
    regions: tuple[Region, ...] = (Region(),)
    grid: TileGrid = TileGrid()

    @model_validator(mode="after")
    def _regions(self) -> Tiling:
        names = [r.name for r in self.regions]
        if not names:
            raise ValueError("tiling.regions: at least one region")
        if len(set(names)) != len(names):
            raise ValueError(f"tiling.regions: names must be unique, got {names}")
        if self.frame is not None:
            # The sizes are checked against the declared frame here, once, at load.
            for region in self.regions:
                _region_box(region, self.frame, self.grid)
        return self


@dataclass(frozen=True)
class RegionPlan:
    """One region on one frame size: its box in the frame, its size in model pixels, and
    its tiles' origins (y, x) in model pixels."""

    name: str
    box: tuple[int, int, int, int]  # x, y, width, height in frame pixels
    scaled: tuple[int, int]  # height, width in model pixels (multiples of MAP_CELL)
    tiles: tuple[tuple[int, int], ...]

    @property
    def scale(self) -> tuple[float, float]:
        """Model pixels per frame pixel (y, x): the grid's, or more for an enlarged region."""
        return self.scaled[0] / self.box[3], self.scaled[1] / self.box[2]


def tile_origins(length: int, size: int, overlap: int) -> list[int]:
    """Where tiles of ``size`` start along ``length`` (model pixels) so that neighbours
    share at least ``overlap`` and the last ends at ``length``; multiples of MAP_CELL."""
    if length < size:
        raise ValueError(f"{length} px is shorter than one tile ({size} px)")
    if length == size:
        return [0]
    count = math.ceil((length - overlap) / (size - overlap))
    last = length - size
    return [round(last * i / (count - 1) / MAP_CELL) * MAP_CELL for i in range(count)]


def _region_box(
    region: Region, frame: tuple[int, int], grid: TileGrid
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    height, width = frame
    w = region.width if region.width is not None else width - region.x
    h = region.height if region.height is not None else height - region.y
    where = f"tiling region {region.name!r}"
    if region.x + w > width or region.y + h > height or w <= 0 or h <= 0:
        raise ValueError(
            f"{where} (x {region.x}, y {region.y}, {w}x{h}) lies outside the {width}x{height} frame"
        )
    scaled = (_to_cells(h * grid.scale), _to_cells(w * grid.scale))
    if min(scaled) < grid.size:
        if not grid.enlarge_small:
            raise ValueError(
                f"{where}: {w}x{h} px at scale {grid.scale:g} is {scaled[1]}x{scaled[0]} "
                f"model px, smaller than one {grid.size} px tile: raise tiling.grid.scale or "
                f"the region, set tiling.grid.enlarge_small, or use no tiling"
            )
        factor = grid.size / min(h, w)  # the shorter side becomes exactly one tile
        scaled = (max(grid.size, _to_cells(h * factor)), max(grid.size, _to_cells(w * factor)))
    return (region.x, region.y, w, h), scaled


def _to_cells(pixels: float) -> int:
    return max(MAP_CELL, round(pixels / MAP_CELL) * MAP_CELL)


def plan_regions(tiling: Tiling, frame_shape: tuple[int, ...]) -> list[RegionPlan]:
    """The regions and tiles for a frame of ``frame_shape`` (height, width, ...). Raises
    :class:`TilingError` for a frame smaller than the declared one or one a region does not
    fit."""
    frame = (int(frame_shape[0]), int(frame_shape[1]))
    if tiling.frame is not None and (frame[0] < tiling.frame[0] or frame[1] < tiling.frame[1]):
        raise TilingError(
            f"the frame is {frame[1]}x{frame[0]}, smaller than the {tiling.frame[1]}x"
            f"{tiling.frame[0]} the bundle's regions were drawn on"
        )
    plans = []
    for region in tiling.regions:
        try:
            box, scaled = _region_box(region, frame, tiling.grid)
        except ValueError as exc:
            raise TilingError(str(exc)) from None
        size, overlap = tiling.grid.size, tiling.grid.overlap
        tiles = tuple(
            (y, x)
            for y in tile_origins(scaled[0], size, overlap)
            for x in tile_origins(scaled[1], size, overlap)
        )
        plans.append(RegionPlan(region.name, box, scaled, tiles))
    return plans


def blend_weights(cells: int, overlap_cells: int) -> np.ndarray:
    """A tile's blending weights (float32 [cells, cells]): 1 inside, falling linearly
    across the overlap to ``1 / (overlap_cells + 1)`` at the edge, never 0."""
    ramp = np.ones(cells, np.float32)
    rise = np.arange(1, overlap_cells + 1, dtype=np.float32) / (overlap_cells + 1)
    ramp[:overlap_cells] = rise
    ramp[cells - overlap_cells :] = rise[::-1]
    return np.outer(ramp, ramp)


def stitch(maps: list[np.ndarray], plan: RegionPlan, grid: TileGrid) -> np.ndarray:
    """The region's map (float32, [height / MAP_CELL, width / MAP_CELL] of its scaled size)
    from its tiles' maps, in ``plan.tiles`` order. Each tile's map covers the whole tile;
    maps of another resolution are resized to the cell grid first."""
    cells = grid.size // MAP_CELL
    weights = blend_weights(cells, grid.overlap // MAP_CELL)
    total = np.zeros((plan.scaled[0] // MAP_CELL, plan.scaled[1] // MAP_CELL), np.float32)
    weight = np.zeros_like(total)
    for tile_map, (y, x) in zip(maps, plan.tiles, strict=True):
        if tile_map.shape != (cells, cells):
            tile_map = cv2.resize(tile_map, (cells, cells), interpolation=cv2.INTER_LINEAR)
        cy, cx = y // MAP_CELL, x // MAP_CELL
        total[cy : cy + cells, cx : cx + cells] += weights * tile_map
        weight[cy : cy + cells, cx : cx + cells] += weights
    return total / weight
