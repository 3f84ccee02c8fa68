"""From raw maps to a verdict: quantile normalisation, padding, score, threshold.

combined = w_st * 0.1 * (st - qa_st) / (qb_st - qa_st) + w_ae * 0.1 * (ae - qa_ae) / (...)
folded into one affine map `a_st * st + a_ae * ae + c`. The image score is the maximum of
the combined map at model resolution: bilinear upsampling of an edge-padded map never
exceeds it, so no full-size work is needed to decide.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_sdk.runtime.manifest import Normalization


class MapScorer:
    """Normalises and combines raw maps as the manifest says."""

    def __init__(self, norm: Normalization) -> None:
        self.pad = norm.pad
        self.pad_mode = norm.pad_mode
        w_st, w_ae = norm.weights.st, norm.weights.ae
        self.a_st = w_st * 0.1 / (norm.st.qb - norm.st.qa)
        self.a_ae = w_ae * 0.1 / (norm.ae.qb - norm.ae.qa)
        self.c = -(self.a_st * norm.st.qa + self.a_ae * norm.ae.qa)

    def combine(self, map_st: np.ndarray, map_ae: np.ndarray) -> np.ndarray:
        """One image's normalised, padded map (float32, [h + 2 pad, w + 2 pad])."""
        combined = np.empty(map_st.shape, dtype=np.float32)
        np.multiply(map_st, self.a_st, out=combined)
        combined += self.a_ae * map_ae
        combined += self.c
        if self.pad == 0:
            return combined
        border = cv2.BORDER_REPLICATE if self.pad_mode == "edge" else cv2.BORDER_CONSTANT
        return cv2.copyMakeBorder(
            combined, self.pad, self.pad, self.pad, self.pad, border, value=0.0
        )

    @staticmethod
    def score(combined: np.ndarray) -> float:
        # NaN must never look like a pass: np.max propagates it and the caller rejects.
        return float(np.max(combined))


def upsample(combined: np.ndarray, height: int, width: int) -> np.ndarray:
    """The map at an image's own size (bilinear, half-pixel centres as the reference)."""
    return cv2.resize(combined, (width, height), interpolation=cv2.INTER_LINEAR)
