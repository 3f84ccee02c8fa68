"""Do the threshold policies hold their target on new good parts, and what do they let
through?

Scores a trained bundle's held-out good training images (the ones its calibration saw,
named in its training record), and the test set's good and defective images, through the
bundle's float32 graph. Then, for each good-images-only policy (``frr``, ``robust``), sets
the threshold from the held-out images that set the bundle's threshold (all of them, and
random subsets of 10, 21 and 34, as a line with fewer good images would) and counts false
rejects on the test's good images and escapes among its defective ones. Subsets are drawn
200 times with a fixed seed; the table gives medians and the 90th percentile of the false
rejects, so a policy that one outlier throws far off shows in the tail.

Also measured, not a product policy: ``gumbel``, ``robust`` with the fitted normal of the log
scores replaced by a Gumbel fitted by median and MAD to the scores themselves. An image's
score is the maximum of its map, and maxima tend to a Gumbel; the fit needs no logarithm, so
it does not depend on where the map's normalisation puts 0 (scores near 0 stretch the log
scores' spread, and with it the robust threshold). And ``upper``: ``robust`` with the log
scores' spread taken from their upper half only (1.4826 x the median distance above the
median), since the threshold is a quantile of the upper tail and the scores near 0, which
the logarithm stretches, lie in the lower one. And ``tail``: the top scores alone, as
extreme-value practice extrapolates a high quantile (peaks over a threshold): above the
(k+1)-th highest score the excesses of a maximum's upper tail are near exponential, so the
``1 - target`` quantile is that score plus the excesses' scale times ln(k / (n target)),
the scale taken from the excesses' median (one outlier cannot move it). No logarithm and no
fit of the bulk: it moves with the scores, whatever the map's normalisation calls 0.
And ``capped``: the lower of ``robust`` and ``tail``, the log-normal fit kept only where its
tail is no heavier than the top scores' own.

    python benchmarks/threshold_policies.py --bundle mt.bundle ../shared/data/magnetic_tile

The scores of an earlier run (this script's output, or a row of
``benchmarks/feature_knn.py``'s results) are measured again, without the bundle, with
``--replay FILE``: the way to try a new candidate on the bundles of runs that did not
outlive their machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from bundle_images import calibration_parts, image_groups, missing_data

RESULTS = Path(__file__).resolve().parent / "results"
# A Gumbel's median is mu + 0.36651 beta and its median absolute deviation 0.76705 beta.
GUMBEL_MEDIAN, GUMBEL_MAD = 0.366513, 0.767049


def _robust_rule(good: np.ndarray, target_frr: float, fit: Any) -> float:
    """``robust``'s frame around another fit: ``frr`` where the scores resolve the target,
    else ``fit(sorted scores)`` raised to the binomial floor (``allowed_above``)."""
    from edge_sdk.calibration.good_scores import allowed_above, frr_threshold, images_needed

    scores = np.sort(np.asarray(good, dtype=np.float64))
    if scores.size >= images_needed(target_frr)["to_resolve"]:
        return frr_threshold(scores, target_frr=target_frr)
    fitted = float(fit(scores))
    allowed = allowed_above(int(scores.size), target_frr)
    return fitted if allowed >= scores.size else max(fitted, float(scores[-1 - allowed]))


def gumbel_threshold(good: np.ndarray, *, target_frr: float) -> float:
    """The candidate: ``robust``'s rule with a Gumbel fitted by median and MAD."""

    def fit(scores: np.ndarray) -> float:
        centre = float(np.median(scores))
        mad = float(np.median(np.abs(scores - centre)))
        z = (-math.log(-math.log(1.0 - target_frr)) - GUMBEL_MEDIAN) / GUMBEL_MAD
        return centre + z * mad

    return _robust_rule(good, target_frr, fit)


def upper_threshold(good: np.ndarray, *, target_frr: float) -> float:
    """The candidate: ``robust``'s rule with the spread of the upper half of the log scores."""
    from statistics import NormalDist

    def fit(scores: np.ndarray) -> float:
        logs = bool(np.all(scores > 0))
        x = np.log(scores) if logs else scores
        centre = float(np.median(x))
        spread = 1.482602 * float(np.median(x[x >= centre] - centre))
        value = centre + NormalDist().inv_cdf(1.0 - target_frr) * spread
        return math.exp(value) if logs else value

    return _robust_rule(good, target_frr, fit)


def tail_excesses(n: int) -> int:
    """How many top scores ``tail`` takes the excesses of: about the square root of the
    images (3 of 10, 7 of 51), so that their median ignores one outlier."""
    return max(3, round(math.sqrt(n)))


def tail_threshold(good: np.ndarray, *, target_frr: float) -> float:
    """The candidate: ``robust``'s rule with an exponential tail fitted to the top scores."""

    def fit(scores: np.ndarray) -> float:
        n = scores.size
        k = min(tail_excesses(n), n - 1)
        base = float(scores[n - 1 - k])
        scale = float(np.median(scores[n - k :] - base)) / math.log(2.0)
        return base + scale * math.log(k / (n * target_frr))

    return _robust_rule(good, target_frr, fit)


def capped_threshold(good: np.ndarray, *, target_frr: float) -> float:
    """The candidate: the lower of ``robust`` and ``tail`` (each with its binomial floor):
    the log-normal fit where its tail is no heavier than the top scores' own."""
    from edge_sdk.calibration.good_scores import robust_threshold

    return min(
        robust_threshold(good, target_frr=target_frr), tail_threshold(good, target_frr=target_frr)
    )


# No interval of their own.
CANDIDATES = {
    "gumbel": gumbel_threshold,
    "upper": upper_threshold,
    "tail": tail_threshold,
    "capped": capped_threshold,
}
SUBSETS = (10, 21, 34)
DRAWS = 200
POLICIES = ("frr", "robust", *CANDIDATES)


def policy_rows(
    threshold_scores: np.ndarray, good: np.ndarray, bad: np.ndarray, *, target_frr: float
) -> list[dict[str, Any]]:
    """For each policy, the threshold from ``threshold_scores`` (all of them, and random
    subsets of :data:`SUBSETS`, :data:`DRAWS` draws with a fixed seed), and the false rejects
    among ``good`` and escapes among ``bad`` at it: medians, and the 90th percentile of the
    false rejects."""
    from edge_sdk.calibration.thresholds import choose_threshold, outcome

    threshold_scores = np.asarray(threshold_scores, dtype=np.float64)
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    sizes = [("all", threshold_scores.size)] + [(str(n), n) for n in SUBSETS]
    for label, n in sizes:
        if n > threshold_scores.size:
            continue
        draws = (
            [threshold_scores]
            if label == "all"
            else [rng.choice(threshold_scores, n, replace=False) for _ in range(DRAWS)]
        )
        for policy in POLICIES:
            frr, esc, inside = [], [], []
            for draw in draws:
                if policy in CANDIDATES:
                    threshold, interval = CANDIDATES[policy](draw, target_frr=target_frr), None
                else:
                    choice = choose_threshold(draw, policy=policy, target_frr=target_frr)
                    threshold = choice.threshold
                    interval = choice.record["expected_false_reject_rate_95ci"]
                at = outcome(good, bad, threshold)
                frr.append(at["false_rejects"]["rate"])
                esc.append(at["escapes"]["rate"])
                if interval is not None:
                    inside.append(interval[0] <= at["false_rejects"]["rate"] <= interval[1])
            rows.append(
                {
                    "images": label,
                    "policy": policy,
                    "frr_median": float(np.median(frr)),
                    "frr_p90": float(np.quantile(frr, 0.9)),
                    "escapes_median": float(np.median(esc)),
                    "within_expected_interval": float(np.mean(inside)) if inside else None,
                }
            )
    return rows


def score_sets(doc: dict[str, Any]) -> list[tuple[str, dict[str, list[float]]]]:
    """The score sets an earlier output holds, each named: this script's output (its
    threshold images) or ``feature_knn.py``'s results (each row's held-out images, all of
    which set its threshold)."""
    if "scores" in doc:
        s = doc["scores"]
        return [(f"{doc['data']} {doc['bundle']}", {**s, "threshold": s["threshold_images"]})]
    sets = []
    for run in doc.get("runs", []):
        for row in run.get("rows", []):
            if "scores" in row:
                s = row["scores"]
                sets.append((run["command"], {**s, "threshold": s["held_out"]}))
    if not sets:
        raise SystemExit("no stored scores in that file")
    return sets


def replay(path: Path, target_frr: float) -> dict[str, Any]:
    """Every policy on the stored score sets of ``path``."""
    runs = []
    for name, s in score_sets(json.loads(path.read_text())):
        good, bad = np.array(s["test_good"]), np.array(s["test_defective"])
        rows = policy_rows(np.array(s["threshold"]), good, bad, target_frr=target_frr)
        runs.append({"scores_of": name, "threshold_images": len(s["threshold"]), "rows": rows})
    return {"replayed": path.name, "target_frr": target_frr, "runs": runs}


def print_rows(rows: list[dict[str, Any]]) -> None:
    print("images  policy  FRR median  FRR p90  escapes median  FRR within expected")
    for r in rows:
        inside = r["within_expected_interval"]
        print(
            f"{r['images']:>6}  {r['policy']:<6}  {r['frr_median']:10.3f}  {r['frr_p90']:7.3f}  "
            f"{r['escapes_median']:14.3f}  {'-' if inside is None else f'{inside:.2f}':>6}"
        )


def main() -> int:
    from edge_sdk import Bundle, Inspector
    from edge_sdk.evaluation.dataset import read_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="MVTec-style set the bundle was trained on")
    parser.add_argument("--bundle")
    parser.add_argument("--target-frr", type=float, default=0.01)
    parser.add_argument(
        "--eval-report",
        help="report.json of `edge-ad eval` on this bundle and set: its test scores are used "
        "instead of scoring the test images again",
    )
    parser.add_argument(
        "--replay", metavar="FILE", help="measure the scores stored in FILE instead of a bundle"
    )
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/...)")
    args = parser.parse_args()
    if args.replay:
        result = replay(Path(args.replay), args.target_frr)
        for run in result["runs"]:
            print(f"{run['scores_of']} ({run['threshold_images']} threshold images)")
            print_rows(run["rows"])
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        return 0
    if args.data is None or args.bundle is None:
        parser.error("give DATA and --bundle, or --replay FILE")
    if missing_data(args.data):
        return 0
    bundle = Bundle.open(args.bundle)
    inspector = Inspector.open(bundle, device="cpu", variant="fp32", recheck=False)

    def score(path: Path) -> float:
        return float(inspector.inspect(read_image(path)).score)

    paths = image_groups(bundle, args.data)
    held_out = np.array([score(p) for p in paths["held_out"]])
    threshold_scores = np.array(calibration_parts(held_out)[1])
    if args.eval_report:
        images = json.loads(Path(args.eval_report).read_text())["images"]
        # An ERROR (no score) is a reject, as eval counts it.
        scores = [(i["defect_type"], np.inf if i["score"] is None else i["score"]) for i in images]
        good = np.array([v for kind, v in scores if kind is None])
        bad = np.array([v for kind, v in scores if kind is not None])
    else:
        good = np.array([score(p) for p in paths["good"]])
        bad = np.array([score(p) for p in paths["defective"]])
    rows = policy_rows(threshold_scores, good, bad, target_frr=args.target_frr)
    report = {
        "bundle": str(args.bundle),
        "data": Path(args.data).name,
        "target_frr": args.target_frr,
        "held_out_threshold_images": int(threshold_scores.size),
        "median_scores": {
            "held_out": float(np.median(held_out)),
            "test_good": float(np.median(good)),
            "test_defective": float(np.median(bad)),
        },
        "rows": rows,
        "command": " ".join(["python", "benchmarks/threshold_policies.py", *sys.argv[1:]]),
        # Every image's score: a new candidate policy can be measured without the bundle
        # (the bundles of long runs do not outlive their machine). An ERROR is inf.
        "scores": {
            "held_out": [float(v) for v in held_out],
            "threshold_images": [float(v) for v in threshold_scores],
            "test_good": [float(v) for v in good],
            "test_defective": [float(v) for v in bad],
        },
    }
    out = Path(args.out or RESULTS / f"threshold_policies_{Path(args.data).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{report['data']}: median score held-out {report['median_scores']['held_out']:.4f}, "
        f"test good {report['median_scores']['test_good']:.4f}"
    )
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
