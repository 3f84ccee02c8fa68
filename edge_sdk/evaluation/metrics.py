"""Exact pixel metrics: pixel AUROC and AU-PRO (image AUROC and rates: `edge_sdk.statistics`).

Everything here is exact (no sampling, no binning, no size cap) and needs only numpy and
OpenCV. Scores follow the runtime's convention: higher means more anomalous, and a part
is rejected when its score is *above* the threshold.

Pixel metrics stream: `PixelScores.add` takes one image's full-size map and mask at a
time and keeps only the map values as float32 (4 bytes per pixel, 12 for defect pixels),
so a test set of 100 million pixels needs about 400 MB, not the several GB that a
scores-plus-labels float64 array and an argsort of it would.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from edge_sdk.statistics import CHUNK, mann_whitney_u

PRO_FPR_LIMIT = 0.3  # MVTec AD integrates the PRO curve up to this false-positive rate


def region_weights(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """For the defect pixels of `mask` (in row-major order), 1 / the size of the connected
    region (8-connected, as MVTec's evaluation) each belongs to; and the number of regions.

    >>> mask = np.zeros((3, 6), bool); mask[0, 0] = True; mask[:, 4:] = True
    >>> weights, regions = region_weights(mask)
    >>> regions, float(weights[0]), float(weights[1] * 6), weights.size
    (2, 1.0, 1.0, 7)
    """
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if count <= 1:
        return np.zeros(0, dtype=np.float64), 0
    sizes = np.bincount(labels.ravel(), minlength=count).astype(np.float64)
    return 1.0 / sizes[labels[mask]], count - 1


class PixelScores:
    """Accumulates full-size anomaly maps and ground-truth masks, one image at a time, for
    the exact pixel AUROC and AU-PRO over all of them.

    Good pixels are every pixel outside a defect, in every image (good images and the
    background of defective ones), as in MVTec AD's evaluation.

    >>> acc = PixelScores()
    >>> mask = np.array([[0, 0, 1, 1]], bool)
    >>> acc.add(np.array([[0.1, 0.5, 0.5, 0.9]], np.float32), mask)
    >>> acc.auroc()  # pairs (0.5 vs 0.1, 0.5), (0.9 vs 0.1, 0.5): (1 + 0.5 + 2) / 4
    0.875
    """

    def __init__(self) -> None:
        self._good: list[np.ndarray] = []
        self._bad: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self.images = 0
        self.regions = 0
        self._sorted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def good_pixels(self) -> int:
        return (
            sum(chunk.size for chunk in self._good)
            if self._sorted is None
            else self._sorted[0].size
        )

    @property
    def defect_pixels(self) -> int:
        return (
            sum(chunk.size for chunk in self._bad) if self._sorted is None else self._sorted[1].size
        )

    def add(self, anomaly_map: np.ndarray, mask: np.ndarray | None) -> None:
        """One image: its anomaly map at the image's own size and its defect mask (bool,
        same size; None for a good image). NaN map values count as +inf (fail-safe)."""
        amap = np.asarray(anomaly_map, dtype=np.float32)
        if amap.ndim != 2:
            raise ValueError(f"expected an HxW anomaly map, got shape {amap.shape}")
        if np.isnan(amap).any():
            amap = np.where(np.isnan(amap), np.float32(np.inf), amap)
        self._sorted = None
        self.images += 1
        if mask is None or not mask.any():
            self._good.append(amap.ravel().copy())
            return
        if mask.shape != amap.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the map's {amap.shape}")
        mask = mask.astype(bool, copy=False)
        weights, regions = region_weights(mask)
        self._good.append(amap[~mask])
        self._bad.append(amap[mask])
        self._weights.append(weights)
        self.regions += regions

    def _finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted good values, sorted defect values, and cumulative region weights."""
        if self._sorted is None:
            good = _drain(self._good)
            good.sort()  # in place: no second copy of the largest array
            bad = _drain(self._bad)
            weights = _drain(self._weights, dtype=np.float64)
            order = np.argsort(bad, kind="stable")
            bad, weights = bad[order], weights[order]
            cumulative = np.concatenate([[0.0], np.cumsum(weights)])
            self._good, self._bad, self._weights = [good], [bad], [weights]
            self._sorted = (good, bad, cumulative)
        return self._sorted

    def auroc(self) -> float:
        """Pixel AUROC over every pixel added; NaN without both good and defect pixels."""
        good, bad, _ = self._finish()
        if good.size == 0 or bad.size == 0:
            return float("nan")
        return mann_whitney_u(good, bad) / (good.size * bad.size)

    def au_pro(self, fpr_limit: float = PRO_FPR_LIMIT) -> float:
        """Area under the per-region-overlap curve up to `fpr_limit`, divided by it.

        As MVTec AD computes it: at each threshold t (a pixel is anomalous when its value is
        >= t) the PRO is the mean over all ground-truth regions of the fraction of the
        region above t, the FPR the fraction of all good pixels above t; tied values form
        one point, and the last segment is cut at `fpr_limit` by linear interpolation.
        NaN without good pixels or without regions.
        """
        if not 0.0 < fpr_limit <= 1.0:
            raise ValueError(f"fpr_limit must be within (0, 1], got {fpr_limit}")
        good, bad, cumulative = self._finish()
        if good.size == 0 or self.regions == 0:
            return float("nan")
        n_good, total = good.size, cumulative[-1]

        def pro(values: np.ndarray, side: str) -> np.ndarray:
            # Weight of the defect pixels above (side="right") or at-or-above ("left").
            idx = np.searchsorted(bad, values, side=side)  # type: ignore[call-overload]
            result: np.ndarray = (total - cumulative[idx]) / self.regions
            return result

        area = 0.0
        x_prev = 0.0
        last = math.inf  # the smallest distinct good value already integrated
        hi = n_good
        # Walk the good values from the top in chunks; only about fpr_limit of them are read.
        while hi > 0:
            lo = max(0, hi - CHUNK)
            values = np.unique(good[lo:hi])[::-1]
            values = values[values < last]
            if values.size:
                x = (n_good - np.searchsorted(good, values, side="left")) / n_good
                x0 = np.concatenate([[x_prev], x[:-1]])
                y0, y1 = pro(values, "right"), pro(values, "left")
                over = np.nonzero(x >= fpr_limit)[0]
                if over.size:
                    k = int(over[0])
                    area += float(np.sum((x[:k] - x0[:k]) * (y0[:k] + y1[:k]) / 2))
                    y_cut = y0[k] + (y1[k] - y0[k]) * (fpr_limit - x0[k]) / (x[k] - x0[k])
                    area += float((fpr_limit - x0[k]) * (y0[k] + y_cut) / 2)
                    return area / fpr_limit
                area += float(np.sum((x - x0) * (y0 + y1) / 2))
                x_prev, last = float(x[-1]), float(values[-1])
            hi = lo
        return area / fpr_limit  # not reached: the lowest good value gives FPR 1

    def summary(self, fpr_limit: float = PRO_FPR_LIMIT) -> dict[str, Any]:
        """JSON-ready pixel metrics and the counts behind them."""
        au_pro = self.au_pro(fpr_limit)
        pixel_auroc = self.auroc()
        return {
            "auroc": None if math.isnan(pixel_auroc) else pixel_auroc,
            "au_pro": None if math.isnan(au_pro) else au_pro,
            "au_pro_fpr_limit": fpr_limit,
            "images": self.images,
            "good_pixels": self.good_pixels,
            "defect_pixels": self.defect_pixels,
            "defect_regions": self.regions,
        }


def _drain(chunks: list[np.ndarray], dtype: Any = np.float32) -> np.ndarray:
    """Concatenate while freeing the parts, so the peak is the total plus one part."""
    out = np.empty(sum(c.size for c in chunks), dtype=dtype)
    at = 0
    chunks.reverse()
    while chunks:
        part = chunks.pop()
        out[at : at + part.size] = part
        at += part.size
    return out


__all__ = [
    "PRO_FPR_LIMIT",
    "PixelScores",
    "region_weights",
]
