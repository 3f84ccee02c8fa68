"""Choosing the image threshold: the policies, and the record of what each choice saw.

A part is rejected when its score is *above* the threshold. Every policy returns a
threshold equal to a score it saw (or just below the lowest one): any value up to the
next score seen makes the same decisions on the images seen, and the lowest one leaves the
widest margin against escapes, which cost more than false rejects on a line.

Policies (`--policy`):

    frr          the smallest threshold that rejects at most `target_frr` of the good
                 images (needs good images only). With fewer images than the target can
                 resolve (under 100 for 1 %) that is the highest good score seen: one
                 outlier among a few images sets the line's threshold
    robust       the default without defective images: `frr` where the images resolve the
                 target; below that, the `1 - target_frr` quantile of a normal fitted to
                 the log scores by median and MAD (an outlier cannot move it), raised only
                 as far as the good scores seen demand (more of them above it than a
                 binomial test at 5 % allows for the target rate)
    f1           the threshold with the best F1 on defective (positive) vs good images;
                 ties go to the lowest threshold
    zero-escape  the highest threshold (see above) that rejects every defective image seen
    margin       where every defective image scores above every good one: halfway between
                 the highest good and the lowest defective score (geometrically, when both
                 are positive), so new parts of either kind have room on their side;
                 otherwise as zero-escape
    strict       the lower of robust and zero-escape: defective images can only make the
                 threshold stricter, never looser than the good-image target allows. The
                 default when defective images are given: a handful of defect images says
                 little about the defects not seen, so they must not loosen the threshold
                 the good images set, while every defect seen must be caught.

The record that goes into the manifest (`threshold.policy`) names the policy, the counts
and rates it saw at the chosen threshold with 95 % Wilson intervals, the threshold every
other policy would have chosen, and notes when the sample is too small for the target.

>>> choice = choose_threshold([0.1, 0.2, 0.3, 0.4], [0.35, 0.9], policy="zero-escape")
>>> choice.threshold, choice.record["at_threshold"]["false_rejects"]["count"]
(0.3, 1)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from edge_sdk.statistics import rate, wilson_interval

log = logging.getLogger(__name__)

POLICIES = ("robust", "frr", "f1", "zero-escape", "strict", "margin")
# The policies that need no defective images; every other one does.
GOOD_ONLY_POLICIES = ("robust", "frr")
_METHOD = {  # the `method` key of the policy record; "false_reject_rate" predates the others
    "robust": "robust_false_reject_rate",
    "frr": "false_reject_rate",
    "f1": "f1",
    "zero-escape": "zero_escape",
    "strict": "strict",
    "margin": "margin",
}
_Z95 = 1.959964


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen image threshold, the policy that chose it and its manifest record."""

    policy: str
    threshold: float
    record: dict[str, Any]


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


def _scores(values: Sequence[float] | np.ndarray | None) -> np.ndarray:
    scores = np.sort(np.asarray([] if values is None else values, dtype=np.float64).ravel())
    if not np.all(np.isfinite(scores)):
        raise ValueError("threshold scores must be finite (an image failed to score)")
    return scores


def default_policy(*, has_defective: bool) -> str:
    """'strict' when defective images are given, else 'robust' (see the module docstring)."""
    return "strict" if has_defective else "robust"


def frr_threshold(good: Sequence[float] | np.ndarray, *, target_frr: float) -> float:
    """The smallest threshold that rejects at most `target_frr` of the good scores.

    >>> frr_threshold([1.0, 2.0, 3.0, 4.0], target_frr=0.25)
    3.0
    """
    value, _ = threshold_for_false_reject_rate(_scores(good), target_frr=target_frr)
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
    scores = _scores(good)
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
    scores = _scores(good)
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
    scores = _scores(good)
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


def zero_escape_threshold(
    good: Sequence[float] | np.ndarray, bad: Sequence[float] | np.ndarray
) -> float:
    """The threshold that rejects every defective score and as few good ones as possible:
    the highest good score below the lowest defective one (or just below that one when no
    good score is lower).

    >>> zero_escape_threshold([0.1, 0.2, 0.6], [0.5, 0.9])
    0.2
    """
    good_s, bad_s = _scores(good), _scores(bad)
    if bad_s.size == 0:
        raise ValueError("the zero-escape threshold needs defective images")
    lowest_bad = bad_s[0]
    below = good_s[good_s < lowest_bad]
    return float(below[-1]) if below.size else float(np.nextafter(lowest_bad, -np.inf))


def margin_threshold(
    good: Sequence[float] | np.ndarray, bad: Sequence[float] | np.ndarray
) -> float:
    """Halfway between the classes when they separate (geometric mean of the highest good
    and the lowest defective score if both are positive), else `zero_escape_threshold`.

    >>> margin_threshold([0.1, 0.4], [1.6, 3.0]), margin_threshold([-0.2, 0.0], [0.4])
    (0.8, 0.2)
    >>> margin_threshold([0.1, 0.6], [0.5, 0.9])  # overlap: every defect still caught
    0.1
    """
    good_s, bad_s = _scores(good), _scores(bad)
    if bad_s.size == 0:
        raise ValueError("the margin threshold needs defective images")
    if good_s.size == 0 or good_s[-1] >= bad_s[0]:
        return zero_escape_threshold(good_s, bad_s)
    top_good, low_bad = float(good_s[-1]), float(bad_s[0])
    if top_good > 0:
        return round(math.sqrt(top_good * low_bad), 6)
    return round((top_good + low_bad) / 2, 6)


def f1_threshold(good: Sequence[float] | np.ndarray, bad: Sequence[float] | np.ndarray) -> float:
    """The threshold with the highest F1 (defective = positive); ties go to the lowest.

    >>> f1_threshold([0.1, 0.2, 0.3], [0.25, 0.9])  # reject > 0.2: TP 2, FP 1 -> F1 0.8
    0.2
    """
    good_s, bad_s = _scores(good), _scores(bad)
    if bad_s.size == 0:
        raise ValueError("the F1-optimal threshold needs defective images")
    seen = np.unique(np.concatenate([good_s, bad_s]))
    # "Reject everything" is a candidate too: just below the lowest score.
    candidates = np.concatenate([[np.nextafter(seen[0], -np.inf)], seen])
    tp = bad_s.size - np.searchsorted(bad_s, candidates, side="right")
    fp = good_s.size - np.searchsorted(good_s, candidates, side="right")
    fn = bad_s.size - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(candidates[int(np.argmax(f1))])  # argmax: the first, i.e. lowest, best


def outcome(
    good: Sequence[float] | np.ndarray, bad: Sequence[float] | np.ndarray | None, threshold: float
) -> dict[str, Any]:
    """Counts and rates at `threshold` (reject when score > threshold), JSON-ready.

    >>> outcome([0.1, 0.5], [0.4, 0.9], 0.45)["escapes"]
    {'count': 1, 'of': 2, 'rate': 0.5, 'rate_95ci': [0.094529, 0.905471]}
    """
    good_s, bad_s = _scores(good), _scores(bad)
    false_rejects = int(good_s.size - np.searchsorted(good_s, threshold, side="right"))
    escapes = int(np.searchsorted(bad_s, threshold, side="right"))
    out: dict[str, Any] = {"false_rejects": rate(false_rejects, good_s.size)}
    if bad_s.size:
        caught = bad_s.size - escapes
        precision = caught / (caught + false_rejects) if caught + false_rejects else 0.0
        recall = caught / bad_s.size
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.update(
            escapes=rate(escapes, bad_s.size),
            precision=round(precision, 6),
            recall=round(recall, 6),
            f1=round(f1, 6),
        )
    return out


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


def choose_threshold(
    good_scores: Sequence[float] | np.ndarray,
    bad_scores: Sequence[float] | np.ndarray | None = None,
    *,
    policy: str | None = None,
    target_frr: float = 0.01,
) -> ThresholdChoice:
    """Choose the image threshold by `policy` (default: `default_policy`) and build the
    record for the manifest's `threshold.policy`.

    >>> choice = choose_threshold(np.linspace(0, 1, 101), target_frr=0.01)
    >>> choice.policy, choice.threshold, choice.record["small_sample"]
    ('robust', 0.99, False)
    """
    if not 0.0 < target_frr < 1.0:
        raise ValueError(f"target_frr must be within (0, 1), got {target_frr}")
    good, bad = _scores(good_scores), _scores(bad_scores)
    if good.size == 0:
        raise ValueError("no good-image scores to choose a threshold from")
    chosen_by = "explicit"
    if policy is None:
        policy = default_policy(has_defective=bad.size > 0)
        chosen_by = "default"
    if policy not in POLICIES:
        raise ValueError(f"unknown threshold policy {policy!r}; expected one of {POLICIES}")
    if policy not in GOOD_ONLY_POLICIES and bad.size == 0:
        raise ValueError(f"threshold policy {policy!r} needs defective images")

    candidates: dict[str, float] = {
        "robust": robust_threshold(good, target_frr=target_frr),
        "frr": frr_threshold(good, target_frr=target_frr),
    }
    if bad.size:
        candidates["f1"] = f1_threshold(good, bad)
        candidates["zero-escape"] = zero_escape_threshold(good, bad)
        candidates["strict"] = min(candidates["robust"], candidates["zero-escape"])
        candidates["margin"] = margin_threshold(good, bad)
    threshold = candidates[policy]

    # The legacy keys of `threshold_for_false_reject_rate` stay, so older readers still work.
    _, record = threshold_for_false_reject_rate(good, target_frr=target_frr)
    at = outcome(good, bad, threshold)
    record.update(
        method=_METHOD[policy],
        policy=policy,
        chosen_by=chosen_by,
        false_rejects_seen=at["false_rejects"]["count"],
        false_reject_rate_95ci=at["false_rejects"]["rate_95ci"],
        good_images=int(good.size),
        defective_images=int(bad.size),
        at_threshold=at,
    )
    if bad.size:
        record["defective_scores"] = {
            "min": float(bad[0]),
            "median": float(np.median(bad)),
            "max": float(bad[-1]),
        }
    # Seen scores either side of the threshold: the interval that makes the same decisions.
    above = np.concatenate([good[good > threshold], bad[bad > threshold]])
    record["same_decisions_below"] = float(above.min()) if above.size else None
    record["candidates"] = {
        name: {"threshold": value, **_counts(outcome(good, bad, value))}
        for name, value in candidates.items()
    }
    too_small, notes = sample_notes(int(good.size), int(bad.size), target_frr, policy)
    record["expected_false_reject_rate_95ci"] = expected_frr_interval(
        good, threshold, fitted=policy in ("robust", "strict") and too_small
    )
    record["small_sample"] = too_small
    notes.extend(_policy_notes(policy, at, target_frr))
    record["notes"] = notes
    # The notes travel in the record (the CLI prints them); the log only traces them.
    for note in notes:
        log.info("threshold: %s", note)
    return ThresholdChoice(policy=policy, threshold=float(threshold), record=record)


def _counts(at: dict[str, Any]) -> dict[str, Any]:
    counts = {"false_rejects": at["false_rejects"]["count"]}
    if "escapes" in at:
        counts["escapes"] = at["escapes"]["count"]
        counts["f1"] = at["f1"]
    return counts


def _policy_notes(policy: str, at: dict[str, Any], target_frr: float) -> list[str]:
    notes = []
    fr = at["false_rejects"]
    if policy in ("zero-escape", "strict", "f1", "margin") and fr["rate"] > target_frr:
        notes.append(
            f"policy {policy} rejects {fr['count']} of {fr['of']} good images "
            f"({fr['rate']:.3g}), above the target false-reject rate {target_frr:g}"
        )
    escapes = at.get("escapes")
    if escapes and escapes["count"]:
        notes.append(
            f"{escapes['count']} of {escapes['of']} defective images seen pass at "
            f"this threshold (policy {policy})"
        )
    return notes


__all__ = [
    "POLICIES",
    "ThresholdChoice",
    "allowed_above",
    "choose_threshold",
    "default_policy",
    "expected_frr_interval",
    "f1_threshold",
    "fitted_threshold",
    "frr_threshold",
    "images_needed",
    "margin_threshold",
    "outcome",
    "robust_threshold",
    "sample_notes",
    "zero_escape_threshold",
]
