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
from typing import Any

import numpy as np

from edge_sdk.calibration.good_scores import (
    allowed_above,
    expected_frr_interval,
    fitted_threshold,
    frr_threshold,
    images_needed,
    robust_threshold,
    sample_notes,
    sorted_scores,
    threshold_for_false_reject_rate,
)
from edge_sdk.statistics import rate

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


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen image threshold, the policy that chose it and its manifest record."""

    policy: str
    threshold: float
    record: dict[str, Any]


def default_policy(*, has_defective: bool) -> str:
    """'strict' when defective images are given, else 'robust' (see the module docstring)."""
    return "strict" if has_defective else "robust"


def zero_escape_threshold(
    good: Sequence[float] | np.ndarray, bad: Sequence[float] | np.ndarray
) -> float:
    """The threshold that rejects every defective score and as few good ones as possible:
    the highest good score below the lowest defective one (or just below that one when no
    good score is lower).

    >>> zero_escape_threshold([0.1, 0.2, 0.6], [0.5, 0.9])
    0.2
    """
    good_s, bad_s = sorted_scores(good), sorted_scores(bad)
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
    good_s, bad_s = sorted_scores(good), sorted_scores(bad)
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
    good_s, bad_s = sorted_scores(good), sorted_scores(bad)
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
    good_s, bad_s = sorted_scores(good), sorted_scores(bad)
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
    good, bad = sorted_scores(good_scores), sorted_scores(bad_scores)
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
    "threshold_for_false_reject_rate",
    "zero_escape_threshold",
]
