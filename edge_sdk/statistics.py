"""The statistics every part shares: image AUROC with its 95 % interval and the ROC curve
(exact, ties counted one half), and measured rates with their 95 % Wilson interval.

They sit beside `errors` and `records`, below every part, because the runtime's parity
gate (`runtime.variants`), calibration's thresholds and evaluation's report all use them.
Needs only numpy.

>>> round(auroc([0.1, 0.4], [0.35, 0.8]), 4)
0.75
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK = 1 << 20  # values per vectorised step: bounds the int64 temporaries to 8 MB


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


def _as_scores(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """float64 scores with NaN as +inf: a part whose score is undefined counts as rejected."""
    scores = np.asarray(values, dtype=np.float64).ravel()
    return np.where(np.isnan(scores), np.inf, scores)


def mann_whitney_u(negatives_sorted: np.ndarray, positives: np.ndarray) -> float:
    """Sum over positives of (#negatives below + half #negatives equal), in exact integers."""
    below = 0
    equal_twice = 0  # left + right counts: 2 * below + equal, summed exactly
    for start in range(0, positives.size, CHUNK):
        chunk = positives[start : start + CHUNK]
        left = np.searchsorted(negatives_sorted, chunk, side="left")
        right = np.searchsorted(negatives_sorted, chunk, side="right")
        below += int(left.sum())
        equal_twice += int(right.sum()) - int(left.sum())
    return below + equal_twice / 2


def auroc(
    good_scores: Sequence[float] | np.ndarray, bad_scores: Sequence[float] | np.ndarray
) -> float:
    """Area under the ROC curve: the probability that a defective part scores above a good
    one, ties counting one half (the Mann-Whitney U statistic over all pairs).

    NaN scores count as +inf (a part with an undefined score is rejected). Returns NaN when
    either class is empty.

    >>> auroc([0.5, 0.5], [0.5, 1.0])  # one tie pair per good part: (1 + 2) / 4
    0.75
    >>> auroc([0.2, 0.2], [0.2])
    0.5
    """
    good = np.sort(_as_scores(good_scores))
    bad = _as_scores(bad_scores)
    if good.size == 0 or bad.size == 0:
        return float("nan")
    return mann_whitney_u(good, bad) / (good.size * bad.size)


def _delong_components(
    good_scores: Sequence[float] | np.ndarray, bad_scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components, in the parts' own order: per defective part the share
    of good parts it outscores, per good part the share of defective parts above it (ties
    one half). Each averages to the AUROC."""
    good, bad = _as_scores(good_scores), _as_scores(bad_scores)

    def below(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
        ordered = np.sort(reference)
        left = np.searchsorted(ordered, values, side="left")
        right = np.searchsorted(ordered, values, side="right")
        return (left + right) / (2.0 * ordered.size)

    return below(good, bad), 1.0 - below(bad, good)


def auroc_interval(
    good_scores: Sequence[float] | np.ndarray,
    bad_scores: Sequence[float] | np.ndarray,
    *,
    z: float = 1.96,
) -> tuple[float, float] | None:
    """95 % interval of the image AUROC over the test parts that could have been drawn:
    DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988, as R's pROC computes it),
    AUROC +- z standard errors, clipped to [0, 1].

    It says how far a score measured on a few dozen defects may lie from the one a larger
    test set would give; it says nothing of the spread between training runs. ``None``
    with fewer than two parts in a class. When the classes do not overlap the variance is
    zero and so is the interval's width, as in pROC.

    >>> lo, hi = auroc_interval([0.1, 0.2, 0.3, 0.6], [0.4, 0.5, 0.7, 0.9])
    >>> round(lo, 3), round(hi, 3)
    (0.592, 1.0)
    """
    if len(good_scores) < 2 or len(bad_scores) < 2:
        return None
    v10, v01 = _delong_components(good_scores, bad_scores)
    area = float(v10.mean())
    variance = float(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)
    half = z * math.sqrt(max(variance, 0.0))
    return max(0.0, area - half), min(1.0, area + half)


def auroc_difference(
    good_a: Sequence[float] | np.ndarray,
    bad_a: Sequence[float] | np.ndarray,
    good_b: Sequence[float] | np.ndarray,
    bad_b: Sequence[float] | np.ndarray,
    *,
    z: float = 1.96,
) -> dict[str, float]:
    """AUROC(a) - AUROC(b) with its 95 % interval and two-sided p-value, for two scorings of
    the same parts in the same order (two bundles or two readings on one test set): DeLong's
    paired test. What both get right or wrong together cancels, so the interval is far
    narrower than the two AUROCs' own intervals suggest.

    >>> d = auroc_difference([0.1, 0.2, 0.3], [0.4, 0.5, 0.25], [0.1, 0.2, 0.3], [0.4, 0.5, 0.35])
    >>> round(d["difference"], 4), d["p_value"] < 0.05
    (-0.1111, False)
    """
    sizes = {len(good_a), len(good_b)}, {len(bad_a), len(bad_b)}
    if len(sizes[0]) != 1 or len(sizes[1]) != 1:
        raise ValueError("auroc_difference: a and b must score the same parts")
    if len(good_a) < 2 or len(bad_a) < 2:
        raise ValueError("auroc_difference: needs at least two parts of each class")
    a10, a01 = _delong_components(good_a, bad_a)
    b10, b01 = _delong_components(good_b, bad_b)
    d10, d01 = a10 - b10, a01 - b01
    difference = float(d10.mean())
    variance = float(np.var(d10, ddof=1) / d10.size + np.var(d01, ddof=1) / d01.size)
    se = math.sqrt(max(variance, 0.0))
    p_value = 1.0 if se == 0 else math.erfc(abs(difference) / se / math.sqrt(2))
    return {
        "difference": difference,
        "ci_low": difference - z * se,
        "ci_high": difference + z * se,
        "p_value": p_value,
    }


@dataclass(frozen=True)
class RocCurve:
    """ROC points from the strictest threshold to the loosest; point k is "reject when the
    score is >= thresholds[k]", point 0 (threshold +inf) rejects nothing."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(
    good_scores: Sequence[float] | np.ndarray, bad_scores: Sequence[float] | np.ndarray
) -> RocCurve:
    """The ROC curve at every distinct score; tied scores give one (diagonal) step, so the
    trapezoidal area under it equals `auroc`.

    >>> curve = roc_curve([0.1, 0.4], [0.35, 0.8])
    >>> curve.fpr.tolist(), curve.tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    good = np.sort(_as_scores(good_scores))
    bad = np.sort(_as_scores(bad_scores))
    if good.size == 0 or bad.size == 0:
        raise ValueError("a ROC curve needs good and defective scores")
    thresholds = np.unique(np.concatenate([good, bad]))[::-1]
    fpr = (good.size - np.searchsorted(good, thresholds, side="left")) / good.size
    tpr = (bad.size - np.searchsorted(bad, thresholds, side="left")) / bad.size
    return RocCurve(
        fpr=np.concatenate([[0.0], fpr]),
        tpr=np.concatenate([[0.0], tpr]),
        thresholds=np.concatenate([[np.inf], thresholds]),
    )


def rate(count: int, n: int) -> dict[str, Any]:
    """A measured rate with its 95 % Wilson interval, JSON-ready.

    >>> rate(0, 50)["rate_95ci"]
    [0.0, 0.07135]
    """
    lo, hi = wilson_interval(count, n)
    return {
        "count": int(count),
        "of": int(n),
        "rate": round(count / n, 6) if n else None,
        "rate_95ci": [round(lo, 6), round(hi, 6)] if n else None,
    }


__all__ = [
    "CHUNK",
    "RocCurve",
    "auroc",
    "auroc_difference",
    "auroc_interval",
    "mann_whitney_u",
    "rate",
    "roc_curve",
    "wilson_interval",
]
