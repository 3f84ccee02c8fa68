"""benchmarks/threshold_policies.py: the candidate policies it measures beside the product's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from threshold_policies import upper_threshold

from edge_sdk.calibration.good_scores import robust_threshold


def test_upper_half_spread_ignores_scores_near_zero() -> None:
    rng = np.random.default_rng(0)
    lognormal = np.exp(rng.normal(np.log(0.04), 0.3, size=50))
    # Symmetric log scores: both spreads estimate the same sigma.
    robust, upper = (f(lognormal, target_frr=0.01) for f in (robust_threshold, upper_threshold))
    assert abs(np.log(upper / robust)) < 0.2
    # Scores with a floor near 0 (a half-normal): their logs stretch the lower tail, which
    # widens the MAD of all the log scores, and with it `robust`, more than the upper half.
    quiet = np.abs(np.random.default_rng(0).normal(0.04, 0.03, size=51))
    assert upper_threshold(quiet, target_frr=0.01) < 0.9 * robust_threshold(quiet, target_frr=0.01)
    assert upper_threshold(quiet, target_frr=0.01) >= np.sort(quiet)[-2]  # the binomial floor
    # With enough images to resolve the target, both are `frr`.
    many = np.exp(rng.normal(size=200))
    assert upper_threshold(many, target_frr=0.01) == robust_threshold(many, target_frr=0.01)
