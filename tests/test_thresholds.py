"""Threshold policies on constructed score sets, and the record they leave in the manifest."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

from edge_sdk.calibration import thresholds
from edge_sdk.calibration.thresholds import (
    choose_threshold,
    f1_threshold,
    frr_threshold,
    images_needed,
    outcome,
    threshold_for_false_reject_rate,
    zero_escape_threshold,
)
from edge_sdk.runtime.manifest import Threshold

GOOD = [0.10, 0.12, 0.15, 0.20, 0.22, 0.25, 0.30, 0.31, 0.40, 0.55]
BAD = [0.35, 0.50, 0.60, 0.90, 1.20]


def test_module_doctests() -> None:
    assert doctest.testmod(thresholds).failed == 0


def test_frr_policy_is_the_existing_one() -> None:
    value, legacy = threshold_for_false_reject_rate(np.array(GOOD), target_frr=0.1)
    choice = choose_threshold(GOOD, policy="frr", target_frr=0.1)
    assert choice.policy == "frr" and choice.threshold == value == 0.40  # one of ten above
    rec = choice.record
    assert rec["method"] == "false_reject_rate" and rec["chosen_by"] == "explicit"
    for key in ("target_false_reject_rate", "images", "false_rejects_seen", "good_scores"):
        assert rec[key] == legacy[key]
    assert rec["at_threshold"]["false_rejects"]["count"] == 1
    assert "escapes" not in rec["at_threshold"] and rec["defective_images"] == 0


def test_zero_escape_rejects_every_defect_seen_with_fewest_false_rejects() -> None:
    # Lowest defect 0.35: the highest good score below it is 0.31; 0.40 and 0.55 rejected.
    assert zero_escape_threshold(GOOD, BAD) == 0.31
    at = outcome(GOOD, BAD, 0.31)
    assert at["escapes"]["count"] == 0 and at["false_rejects"]["count"] == 2
    # Just above the chosen value, the same decisions; at the lowest defect, an escape.
    assert outcome(GOOD, BAD, 0.3499)["escapes"]["count"] == 0
    assert outcome(GOOD, BAD, 0.35)["escapes"]["count"] == 1


def test_zero_escape_when_a_defect_scores_below_every_good_part() -> None:
    value = zero_escape_threshold([0.5, 0.6], [0.1, 0.9])
    assert value < 0.1 and value == np.nextafter(0.1, -1)
    choice = choose_threshold([0.5, 0.6], [0.1, 0.9], policy="zero-escape", target_frr=0.01)
    assert choice.record["at_threshold"]["false_rejects"]["count"] == 2
    assert any("rejects 2 of 2 good images" in note for note in choice.record["notes"])


def test_f1_hand_computed() -> None:
    # Reject when > t. t = 0.2: TP 3, FP 2, FN 0 -> F1 6/8; t = 0.25: TP 2, FP 2, FN 1 ->
    # 4/7; t = 0.3: TP 2, FP 1, FN 1 -> 4/6; t = 0.4: TP 2, FP 0, FN 1 -> 4/5 (the best);
    # t = 0.1: TP 3, FP 3 -> 6/9. Zero-escape would take 0.2.
    good, bad = [0.1, 0.2, 0.3, 0.4], [0.25, 0.8, 0.9]
    assert f1_threshold(good, bad) == 0.4
    assert zero_escape_threshold(good, bad) == 0.2
    choice = choose_threshold(good, bad, policy="f1")
    assert choice.threshold == 0.4
    assert choice.record["at_threshold"]["f1"] == pytest.approx(0.8, abs=1e-6)
    assert choice.record["at_threshold"]["escapes"]["count"] == 1
    # On GOOD/BAD: t = 0.31 -> TP 5, FP 2: 10/12 beats t = 0.40 -> TP 4, FP 1, FN 1: 8/10.
    assert f1_threshold(GOOD, BAD) == 0.31


def test_f1_ties_go_to_the_lowest_threshold() -> None:
    # good [0.5, 0.5], bad [0.1, 0.6]: reject all -> TP 2, FP 2: 4/6; t = 0.5 -> TP 1,
    # FN 1: 2/3 as well; t = 0.1 -> TP 1, FP 2, FN 1: 2/5. The tie goes to rejecting all.
    value = f1_threshold([0.5, 0.5], [0.1, 0.6])
    assert value < 0.1 and value == np.nextafter(0.1, -1)


def test_strict_is_the_lower_of_frr_and_zero_escape() -> None:
    choice = choose_threshold(GOOD, BAD, target_frr=0.1)
    assert choice.policy == "strict" and choice.record["chosen_by"] == "default"
    cands = choice.record["candidates"]
    assert cands["frr"]["threshold"] == 0.40 and cands["zero-escape"]["threshold"] == 0.31
    assert choice.threshold == 0.31
    # With a looser model the frr threshold is the lower one, and it is kept.
    far_bad = [2.0, 3.0]
    loose = choose_threshold(GOOD, far_bad, target_frr=0.1)
    assert loose.threshold == 0.40 == frr_threshold(GOOD, target_frr=0.1)
    assert loose.record["candidates"]["zero-escape"]["threshold"] == 0.55


def test_record_counts_rates_and_intervals() -> None:
    choice = choose_threshold(GOOD, BAD, policy="zero-escape", target_frr=0.1)
    rec = choice.record
    at = rec["at_threshold"]
    assert at["false_rejects"]["count"] == 2 and at["false_rejects"]["rate"] == 0.2
    assert at["false_rejects"]["rate_95ci"] == pytest.approx([0.0567, 0.5098], abs=1e-4)
    assert at["escapes"]["count"] == 0 and at["escapes"]["of"] == 5
    assert at["escapes"]["rate_95ci"][1] == pytest.approx(0.4345, abs=1e-4)
    assert rec["same_decisions_below"] == 0.35
    assert rec["good_images"] == 10 and rec["defective_images"] == 5
    assert rec["method"] == "zero_escape" and rec["chosen_by"] == "explicit"
    # It must survive the manifest (JSON/YAML) as plain data.
    json.dumps(rec)
    Threshold(image=choice.threshold, pixel=choice.threshold, policy=rec)


def test_small_validation_set_is_flagged() -> None:
    good = np.linspace(0.0, 1.0, 50)
    choice = choose_threshold(good, policy="frr", target_frr=0.001)
    rec = choice.record
    assert rec["small_sample"] is True
    assert choice.threshold == 1.0  # it cannot resolve 0.1 %: the highest good score
    text = " ".join(rec["notes"])
    assert "cannot resolve" in text and "1000" in text and "3838" in text
    assert images_needed(0.01) == {"to_resolve": 100, "to_show_at_95": 381}
    big = choose_threshold(np.linspace(0, 1, 5000), target_frr=0.001)
    assert big.record["small_sample"] is False and big.record["notes"] == []


def _lognormal(n: int, seed: int) -> np.ndarray:
    return np.exp(np.random.default_rng(seed).normal(np.log(0.1), 0.25, n))


def test_robust_is_the_default_and_one_outlier_does_not_set_it() -> None:
    good = _lognormal(20, 0)
    with_outlier = np.append(good, 0.408)  # the case: 21 images, one far above
    choice = choose_threshold(with_outlier, target_frr=0.01)
    assert choice.policy == "robust" and choice.record["chosen_by"] == "default"
    assert choice.record["candidates"]["frr"]["threshold"] == 0.408  # the old fallback
    # The fit of the 99 % quantile: median x exp(2.326 sigma), sigma = 0.25 here.
    assert 0.13 < choice.threshold < 0.25
    assert choice.threshold == pytest.approx(choose_threshold(good).threshold, rel=0.15)
    lo, hi = choice.record["expected_false_reject_rate_95ci"]
    assert lo < 0.01 < hi
    assert "extrapolated" in " ".join(choice.record["notes"])


def test_robust_is_raised_when_the_good_scores_contradict_the_fit() -> None:
    # Four of 21 far above a tight bulk: a binomial test at 1 % allows one above.
    good = np.concatenate([_lognormal(17, 1), [0.5, 0.6, 0.7, 0.8]])
    assert thresholds.allowed_above(21, 0.01) == 1
    assert thresholds.robust_threshold(good, target_frr=0.01) == 0.7


def test_robust_equals_frr_where_the_images_resolve_the_target() -> None:
    good = _lognormal(150, 2)
    assert thresholds.robust_threshold(good, target_frr=0.01) == frr_threshold(
        good, target_frr=0.01
    )


def test_allowed_above_is_a_one_sided_binomial_test() -> None:
    from math import comb

    for n, r in ((21, 0.01), (50, 0.05), (99, 0.01), (5, 0.3)):
        k = thresholds.allowed_above(n, r)
        tail = [
            sum(comb(n, j) * r**j * (1 - r) ** (n - j) for j in range(m, n + 1)) for m in (k, k + 1)
        ]
        assert tail[0] >= 0.05 and (k == n or tail[1] < 0.05)


def test_policies_needing_defects_refuse_without() -> None:
    for policy in ("f1", "zero-escape", "strict"):
        with pytest.raises(ValueError, match="needs defective images"):
            choose_threshold(GOOD, policy=policy)
    with pytest.raises(ValueError, match="unknown threshold policy"):
        choose_threshold(GOOD, BAD, policy="best")
    with pytest.raises(ValueError, match="finite"):
        choose_threshold([0.1, float("nan")])
