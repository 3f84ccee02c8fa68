"""Map quantiles and the image threshold, measured on good images through the graph itself.

This needs only the runtime (ONNX Runtime), so a line can be recalibrated on the edge box.
Quantiles are computed exactly over every map value (no sampling, no size cap).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_sdk.engine import Engine
from edge_sdk.manifest import Normalization, Quantiles, Threshold
from edge_sdk.preprocess import to_model_input
from edge_sdk.scoring import MapScorer

Q_A, Q_B = 0.9, 0.995  # the paper's map normalisation quantiles


@dataclass(frozen=True)
class RawMaps:
    st: np.ndarray  # [N, h, w] float32
    ae: np.ndarray


def collect_raw_maps(
    engine: Engine, images: Iterable[np.ndarray], *, resize: str = "area", batch: int = 8
) -> RawMaps:
    """Run good images through the graph and keep both raw maps of each."""
    h, w = engine.input_hw
    buf = np.zeros((batch, 3, h, w), dtype=np.uint8)
    st: list[np.ndarray] = []
    ae: list[np.ndarray] = []
    n = 0

    def flush(count: int) -> None:
        map_st, map_ae = engine.run(buf[:count])
        st.append(map_st[:, 0].copy())
        ae.append(map_ae[:, 0].copy())

    for image in images:
        to_model_input(image, buf[n], resize=resize)
        n += 1
        if n == batch:
            flush(n)
            n = 0
    if n:
        flush(n)
    if not st:
        raise ValueError("no images to calibrate on")
    return RawMaps(np.concatenate(st), np.concatenate(ae))


def map_quantiles(maps: np.ndarray) -> Quantiles:
    """The 0.9 and 0.995 quantiles of every value of every map, exactly."""
    qa, qb = np.quantile(maps.astype(np.float64).ravel(), [Q_A, Q_B])
    if not qb > qa:  # a constant map (e.g. an untrained model) would divide by zero
        qb = qa + max(abs(qa), 1.0) * 1e-6
    return Quantiles(qa=float(qa), qb=float(qb))


def normalization_from(maps: RawMaps, **overrides: Any) -> Normalization:
    return Normalization(st=map_quantiles(maps.st), ae=map_quantiles(maps.ae), **overrides)


def image_scores(maps: RawMaps, norm: Normalization) -> np.ndarray:
    scorer = MapScorer(norm)
    return np.array(
        [scorer.score(scorer.combine(s, a)) for s, a in zip(maps.st, maps.ae, strict=True)]
    )


def wilson_interval(failures: int, n: int, *, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate seen as `failures` out of `n`.

    >>> lo, hi = wilson_interval(0, 100)
    >>> (lo, round(hi, 4))
    (0.0, 0.037)
    """
    if n <= 0:
        return (0.0, 1.0)
    p = failures / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def threshold_for_false_reject_rate(
    good_scores: np.ndarray, *, target_frr: float = 0.01
) -> tuple[float, dict[str, Any]]:
    """The smallest threshold that rejects at most `target_frr` of the good images seen,
    and the policy record for the manifest (with the uncertainty of the measured rate).
    """
    scores = np.sort(np.asarray(good_scores, dtype=np.float64))
    n = scores.size
    if n == 0:
        raise ValueError("no good-image scores to choose a threshold from")
    allowed = math.floor(target_frr * n)  # good images that may score above the threshold
    threshold = float(scores[n - 1 - allowed])
    rejected = int(np.sum(scores > threshold))
    lo, hi = wilson_interval(rejected, n)
    policy = {
        "method": "false_reject_rate",
        "target_false_reject_rate": target_frr,
        "images": n,
        "false_rejects_seen": rejected,
        "false_reject_rate_95ci": [round(lo, 6), round(hi, 6)],
        "good_scores": {
            "min": float(scores[0]),
            "median": float(np.median(scores)),
            "p99": float(np.quantile(scores, 0.99)),
            "max": float(scores[-1]),
        },
    }
    return threshold, policy


def calibrate(
    engine: Engine,
    good_images: Iterable[np.ndarray],
    *,
    resize: str = "area",
    target_frr: float = 0.01,
    source: str = "",
) -> tuple[Normalization, Threshold, dict[str, Any]]:
    """Quantiles, threshold and calibration record from held-out good images.

    The image threshold follows `threshold_for_false_reject_rate`; the pixel threshold
    equals it, so the defect mask shows exactly the region that made a part NOK.
    """
    maps = collect_raw_maps(engine, good_images, resize=resize)
    norm = normalization_from(maps)
    scores = image_scores(maps, norm)
    value, policy = threshold_for_false_reject_rate(scores, target_frr=target_frr)
    threshold = Threshold(image=value, pixel=value, policy=policy)
    record = {"images": int(scores.size), "source": source, "map_size": list(maps.st.shape[1:])}
    return norm, threshold, record
