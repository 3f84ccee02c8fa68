"""What good images alone say about a false-reject rate: the threshold that reaches a
target rate on them (`frr`), the robust fit for when they are too few to resolve it
(`robust`), the interval of the rate to expect on new good parts, and how many images a
target needs. :mod:`.thresholds` builds the policies on these.

>>> good = [1.0, 1.1, 0.9, 1.05, 0.95, 9.0]
>>> frr_threshold(good, target_frr=0.01), round(robust_threshold(good, target_frr=0.01), 3)
(9.0, 1.319)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from edge_sdk.statistics import wilson_interval

_Z95 = 1.959964


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


def sorted_scores(values: Sequence[float] | np.ndarray | None) -> np.ndarray:
    scores = np.sort(np.asarray([] if values is None else values, dtype=np.float64).ravel())
    if not np.all(np.isfinite(scores)):
        raise ValueError("threshold scores must be finite (an image failed to score)")
    return scores


def frr_threshold(good: Sequence[float] | np.ndarray, *, target_frr: float) -> float:
    """The smallest threshold that rejects at most `target_frr` of the good scores.

    >>> frr_threshold([1.0, 2.0, 3.0, 4.0], target_frr=0.25)
    3.0
    """
    value, _ = threshold_for_false_reject_rate(sorted_scores(good), target_frr=target_frr)
    return value


# A binomial tail below this says the good scores seen contradict the fitted threshold.
_CONSISTENT_P = 0.05
# The robust scale of a normal: sigma = 1.4826 x median absolute deviation.
_MAD_SIGMA = 1.482602


def _robust_normal(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of a normal fitted by median and MAD along the last axis."""
    centre = np.median(x, axis=-1)
    spread = _MAD_SIGMA * np.median(np.abs(x - centre[..., None]), axis=-1)
    return centre, spread


def allowed_above(n: int, target_rate: float) -> int:
    """The most of `n` good images that may score above a threshold whose true false-reject
    rate is `target_rate` before a one-sided binomial test at 5 % rejects it.

    >>> allowed_above(21, 0.01), allowed_above(101, 0.01)
    (1, 3)
    """
    k, tail = 0, 1.0  # tail = P(X >= k)
    while k < n:
        tail -= math.comb(n, k) * target_rate**k * (1 - target_rate) ** (n - k)
        if tail < _CONSISTENT_P:
            return k
        k += 1
    return n


def fitted_threshold(good: Sequence[float] | np.ndarray, *, target_frr: float) -> float:
    """The `1 - target_frr` quantile of a normal fitted by median and MAD to the log scores
    (to the scores themselves when any is <= 0): one outlier does not move it.

    >>> round(fitted_threshold([1.0, 1.1, 0.9, 1.05, 0.95, 9.0], target_frr=0.01), 3)
    1.319
    """
    scores = sorted_scores(good)
    logs = bool(np.all(scores > 0))
    x = np.log(scores) if logs else scores
    centre, spread = _robust_normal(x)
    value = float(centre) + NormalDist().inv_cdf(1.0 - target_frr) * float(spread)
    return float(np.exp(value)) if logs else value


def robust_threshold(good: Sequence[float] | np.ndarray, *, target_frr: float) -> float:
    """The `robust` policy (module docstring): `frr` where `good` resolves the target, else
    the fitted quantile, raised to a good score where more lie above it than
    :func:`allowed_above` allows.

    >>> good = [1.0, 1.1, 0.9, 1.05, 0.95, 9.0]
    >>> frr_threshold(good, target_frr=0.01), round(robust_threshold(good, target_frr=0.01), 3)
    (9.0, 1.319)
    """
    scores = sorted_scores(good)
    if scores.size >= images_needed(target_frr)["to_resolve"]:
        return frr_threshold(scores, target_frr=target_frr)
    fitted = fitted_threshold(scores, target_frr=target_frr)
    allowed = allowed_above(int(scores.size), target_frr)
    if allowed >= scores.size:
        return fitted
    return max(fitted, float(scores[scores.size - 1 - allowed]))


_BOOTSTRAP_ROUNDS = 2000


def expected_frr_interval(
    good: Sequence[float] | np.ndarray, threshold: float, *, fitted: bool
) -> list[float]:
    """A 95 % interval for the false-reject rate that `threshold` will give on new good
    parts like `good`: the Wilson interval of the share of `good` above it, widened, for a
    fitted threshold, to the bootstrap interval of the fitted normal's tail above it.

    >>> expected_frr_interval(np.linspace(0.0, 1.0, 101), 0.99, fitted=False)
    [0.00175, 0.053968]
    """
    scores = sorted_scores(good)
    lo, hi = wilson_interval(int(np.sum(scores > threshold)), int(scores.size))
    if fitted and np.all(scores > 0) and threshold > 0:
        rng = np.random.default_rng(0)  # the record must not change from run to run
        logs = np.log(scores)
        draws = logs[rng.integers(0, logs.size, size=(_BOOTSTRAP_ROUNDS, logs.size))]
        centre, spread = _robust_normal(draws)
        z = (math.log(threshold) - centre) / np.maximum(spread, 1e-12)
        tails = np.array([1.0 - NormalDist().cdf(float(v)) for v in z])
        lo = min(lo, float(np.quantile(tails, 0.025)))
        hi = max(hi, float(np.quantile(tails, 0.975)))
    return [round(lo, 6), round(hi, 6)]


def images_needed(target_rate: float) -> dict[str, int]:
    """How many images a target rate needs: to be resolvable at all (one image may fail),
    and to be shown at 95 % confidence when none fails (Wilson upper bound <= target).

    >>> images_needed(0.001)
    {'to_resolve': 1000, 'to_show_at_95': 3838}
    """
    z2 = _Z95 * _Z95
    return {
        "to_resolve": math.ceil(1.0 / target_rate - 1e-9),
        "to_show_at_95": math.ceil(z2 * (1.0 - target_rate) / target_rate - 1e-9),
    }


def sample_notes(
    n_good: int, n_bad: int, target_frr: float, policy: str = "frr"
) -> tuple[bool, list[str]]:
    """Whether the good set is too small for the target rate, and sentences saying so."""
    need = images_needed(target_frr)
    notes: list[str] = []
    too_small = n_good < need["to_resolve"]
    if too_small:
        how = (
            "the threshold is the highest good score seen"
            if policy == "frr"
            else "the threshold is extrapolated from a normal fitted to the log scores, "
            "not measured"
        )
        notes.append(
            f"{n_good} good images cannot resolve a target false-reject rate of "
            f"{target_frr:g}: {how}; at least {need['to_resolve']} held-out good images are "
            f"needed to resolve it (hold out more, or calibrate on more good images with "
            f"edge-ad calibrate)"
        )
    if n_good < need["to_show_at_95"]:
        upper = wilson_interval(0, n_good)[1]
        notes.append(
            f"even with no false rejects, {n_good} good images only show a false-reject "
            f"rate below {upper:.3g} (95 % upper bound); about {need['to_show_at_95']} "
            f"are needed to show {target_frr:g}"
        )
    if 0 < n_bad < 30:
        upper = wilson_interval(0, n_bad)[1]
        notes.append(
            f"only {n_bad} defective images: even with no escapes seen, the escape rate is "
            f"only known to be below {upper:.3g} (95 % upper bound)"
        )
    return too_small, notes
