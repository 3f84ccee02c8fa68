"""Inspecting a frame through a tiled bundle (:mod:`edge_sdk.runtime.tiling`): every tile of
every region in batched graph calls, the tiles' maps stitched per region, the part's score
the highest of any region's, and one map at the frame's own geometry for overlays and masks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edge_sdk.runtime.preprocess import Scratch, check_image, to_model_input
from edge_sdk.runtime.scoring import MapScorer
from edge_sdk.runtime.tiling import MAP_CELL, RegionPlan, Tiling, plan_regions, stitch

RunGraph = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TiledMaps:
    """One frame's outcome: the frame-geometry map (cells of MAP_CELL model pixels), the
    part's score, where it was highest, and the seconds each stage took."""

    frame_map: np.ndarray
    score: float
    worst: str
    preprocess_s: float
    infer_s: float
    decide_s: float


def cut_tiles(
    image: np.ndarray,
    plans: list[RegionPlan],
    size: int,
    resize: str,
    scratch: Scratch | None = None,
) -> np.ndarray:
    """Every tile of ``plans`` in ``image`` as graph input ([n, 3, size, size] uint8, RGB):
    each region cropped, scaled with the bundle's resize mode, then cut. With ``scratch``
    the result is a reused buffer, valid until the next call."""
    scratch = scratch or Scratch()
    count = sum(len(p.tiles) for p in plans)
    tiles = scratch.get("tiles", (count, 3, size, size))
    k = 0
    for plan in plans:
        x, y, w, h = plan.box
        scaled = scratch.get(f"region:{plan.name}", (3, *plan.scaled))
        to_model_input(image[y : y + h, x : x + w], scaled, resize=resize)
        for ty, tx in plan.tiles:
            tiles[k] = scaled[:, ty : ty + size, tx : tx + size]
            k += 1
    return tiles


class TiledFrames:
    """Cuts frames into the bundle's tiles and stitches their maps. Reuses its buffers
    from frame to frame (one per frame size): give each thread its own, as the Inspector."""

    def __init__(self, tiling: Tiling, scorer: MapScorer, *, resize: str, max_batch: int):
        self.tiling = tiling
        self.scorer = scorer
        self.resize = resize
        self.max_batch = max(1, max_batch)
        self._plans: dict[tuple[int, int], list[RegionPlan]] = {}
        self._scratch = Scratch()

    def plans(self, shape: tuple[int, ...]) -> list[RegionPlan]:
        key = (int(shape[0]), int(shape[1]))
        if key not in self._plans:
            self._plans[key] = plan_regions(self.tiling, key)
        return self._plans[key]

    def cut(self, image: np.ndarray) -> tuple[list[RegionPlan], np.ndarray]:
        """The frame's plans and every tile as graph input ([n, 3, size, size] uint8)."""
        check_image(image)
        plans = self.plans(image.shape)
        return plans, cut_tiles(image, plans, self.tiling.grid.size, self.resize, self._scratch)

    def run(self, tiles: np.ndarray, graph: RunGraph) -> list[np.ndarray]:
        """Every tile's combined (normalised, padded) map, in batches of ``max_batch``."""
        maps = []
        for start in range(0, len(tiles), self.max_batch):
            st, ae = graph(np.ascontiguousarray(tiles[start : start + self.max_batch]))
            maps += [self.scorer.combine(st[j, 0], ae[j, 0]) for j in range(len(st))]
        return maps

    def assemble(
        self, image_shape: tuple[int, ...], plans: list[RegionPlan], maps: list[np.ndarray]
    ) -> tuple[np.ndarray, float, str]:
        """Stitch each region, score the part, and place the regions on a map of the
        frame's geometry; pixels outside every region get the lowest value of any region."""
        grid = self.tiling.grid
        stitched, k = [], 0
        worst, score = "", -np.inf
        for plan in plans:
            tile_maps = maps[k : k + len(plan.tiles)]
            k += len(plan.tiles)
            region_map = stitch(tile_maps, plan, grid)
            stitched.append(region_map)
            peaks = [MapScorer.score(m) for m in tile_maps]
            top = int(np.argmax(peaks))
            region_score = MapScorer.score(region_map)
            if not region_score <= score:  # NaN wins: the part must fail safe
                score = region_score
                (ty, tx), (sy, sx) = plan.tiles[top], plan.scale
                x, y = plan.box[0] + tx / sx, plan.box[1] + ty / sy
                worst = f"{plan.name}: tile {top} at x {x:.0f}, y {y:.0f} (frame px)"
        # Frame pixels per cell, at the finest scale of any region (an enlarged one's).
        cell = MAP_CELL / max([grid.scale, *(min(p.scale) for p in plans)])
        h, w = int(image_shape[0]), int(image_shape[1])
        frame_map = np.full(
            (max(1, round(h / cell)), max(1, round(w / cell))),
            min(float(np.nanmin(m)) if np.isfinite(m).any() else 0.0 for m in stitched),
            np.float32,
        )
        for plan, region_map in zip(plans, stitched, strict=True):
            x, y, bw, bh = plan.box
            top, left = round(y / cell), round(x / cell)
            rows = min(frame_map.shape[0] - top, max(1, round(bh / cell)))
            cols = min(frame_map.shape[1] - left, max(1, round(bw / cell)))
            if (rows, cols) != region_map.shape:
                region_map = cv2.resize(region_map, (cols, rows), interpolation=cv2.INTER_LINEAR)
            frame_map[top : top + rows, left : left + cols] = region_map
        return frame_map, float(score), worst

    def inspect(self, image: np.ndarray, graph: RunGraph) -> TiledMaps:
        t0 = time.perf_counter()
        plans, tiles = self.cut(image)
        t1 = time.perf_counter()
        maps = self.run(tiles, graph)
        t2 = time.perf_counter()
        frame_map, score, worst = self.assemble(image.shape, plans, maps)
        return TiledMaps(frame_map, score, worst, t1 - t0, t2 - t1, time.perf_counter() - t2)
