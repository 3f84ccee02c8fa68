"""benchmarks/threshold_policies.py: the candidate policies it measures beside the product's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from threshold_policies import capped_threshold, tail_threshold, upper_threshold

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


def test_tail_moves_with_the_scores_and_one_outlier_does_not_move_it() -> None:
    rng = np.random.default_rng(0)
    mu, beta = 0.05, 0.01  # a Gumbel, as maxima are: its 99 % quantile is mu + 4.60 beta
    true = mu - beta * np.log(-np.log(0.99))
    draws = [tail_threshold(rng.gumbel(mu, beta, 51), target_frr=0.01) for _ in range(300)]
    assert abs(np.median(draws) / true - 1) < 0.05
    scores = rng.gumbel(mu, beta, 51)
    # No logarithm: where the map's normalisation puts 0 does not matter.
    shifted = tail_threshold(scores + 1.0, target_frr=0.01) - 1.0
    assert shifted == pytest.approx(tail_threshold(scores, target_frr=0.01), abs=1e-9)
    spoiled = scores.copy()
    spoiled[np.argmax(spoiled)] = 10.0
    assert tail_threshold(spoiled, target_frr=0.01) == pytest.approx(
        tail_threshold(scores, target_frr=0.01), rel=0.1
    )


def test_replay_measures_every_policy_on_stored_scores(tmp_path: Path) -> None:
    # The scores of a bundle that did not outlive its machine, measured again without it.
    import json
    import subprocess

    rng = np.random.default_rng(1)
    stored = {
        "data": "parts",
        "bundle": "gone.bundle",
        "scores": {
            "held_out": list(rng.gumbel(0.05, 0.01, 30)),
            "threshold_images": list(rng.gumbel(0.05, 0.01, 20)),
            "test_good": list(rng.gumbel(0.05, 0.01, 100)),
            "test_defective": list(rng.gumbel(0.12, 0.03, 40)),
        },
    }
    (tmp_path / "stored.json").write_text(json.dumps(stored))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "threshold_policies.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--replay",
            str(tmp_path / "stored.json"),
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (run,) = json.loads((tmp_path / "out.json").read_text())["runs"]
    assert run["threshold_images"] == 20
    policies = {(r["images"], r["policy"]) for r in run["rows"]}
    assert {("all", p) for p in ("frr", "robust", "gumbel", "upper", "tail")} <= policies
    assert ("34", "frr") not in policies  # a subset larger than the images is not drawn


def test_capped_stays_near_the_top_scores_where_the_log_fit_overshoots() -> None:
    # Scores spread evenly up from near 0 (a weak student's normalised maps): the log scores'
    # long lower tail widens the fit, which then sets the line far above every score seen.
    even = np.linspace(0.004, 0.15, 51)
    assert robust_threshold(even, target_frr=0.01) > 2 * even.max()
    assert even.max() <= capped_threshold(even, target_frr=0.01) < 1.5 * even.max()
