"""Which of EfficientAD's two maps catches the defects of a short-trained bundle?

A part's map is a weighted sum of two quantile-normalised maps: the student's distance to
the teacher (``st``, local: a patch unlike the good ones) and the autoencoder's distance to
the student (``ae``, global: a patch in the wrong place), half each as the reference
weighs them. Each learns at its own pace, so after 1,000 steps one may be mostly noise and
the sum worse than its better half.

It scores a trained bundle's held-out good training images (named in its training record)
and the test set through the float32 graph once, keeping both raw maps, then reads each
image's score with the ``st`` share of the weights at 0, 0.25, 0.5 (as trained), 0.75 and
1, the bundle's own quantiles unchanged. For each share: image AUROC with its 95 %
interval, the paired difference against the trained weights (DeLong, the same images), and
the bundle's default threshold policy (``robust``, 1 % false rejects) set on the held-out
images that set the bundle's threshold, with its false rejects and escapes on the test set.
For a tiled bundle a part's score is the highest of its tiles' maps.

Choose a weighting on one data set and confirm it on the other:

    python benchmarks/map_parts.py --bundle mt.bundle ../shared/data/magnetic_tile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bundle_images import calibration_parts, image_groups, missing_data

RESULTS = Path(__file__).resolve().parent / "results"

RawMaps = list[tuple[np.ndarray, np.ndarray]]  # an image's (st, ae) pairs, one per tile


def reading_score(raw: RawMaps, scorer: Any) -> float:
    """An image's score through ``scorer`` (a MapScorer): the highest cell of its maps."""
    return max(scorer.score(scorer.combine(st, ae)) for st, ae in raw)


def raw_maps(bundle: Any, groups: dict[str, list[Path]], threads: int) -> dict[str, list[RawMaps]]:
    """Each image's raw maps, caught on their way out of the engine."""
    from edge_sdk import Inspector
    from edge_sdk.evaluation.dataset import read_image

    with Inspector.open(
        bundle, device="cpu", variant="fp32", recheck=False, threads=threads
    ) as inspector:
        caught: RawMaps = []
        run = inspector.engine.run

        def catching(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            st, ae = run(batch)
            caught.extend((st[k, 0].copy(), ae[k, 0].copy()) for k in range(len(st)))
            return st, ae

        inspector.engine.run = catching  # type: ignore[method-assign]
        out: dict[str, list[RawMaps]] = {}
        for group, paths in groups.items():
            out[group] = []
            for path in paths:
                caught.clear()
                result = inspector.inspect(read_image(path))
                if result.error is not None or not caught:
                    raise SystemExit(f"{path}: no maps ({result.error})")
                out[group].append(list(caught))
        return out


def main() -> int:
    from edge_sdk import Bundle
    from edge_sdk.calibration.quantiles import CHECKED_ST_SHARES
    from edge_sdk.calibration.thresholds import choose_threshold, outcome
    from edge_sdk.runtime.manifest import MapWeights
    from edge_sdk.runtime.scoring import MapScorer
    from edge_sdk.statistics import auroc, auroc_difference, auroc_interval

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="MVTec-style set the bundle was trained on")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--shares", default=",".join(str(s) for s in CHECKED_ST_SHARES))
    parser.add_argument("--target-frr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/...)")
    args = parser.parse_args()
    if missing_data(args.data):
        return 0
    bundle = Bundle.open(args.bundle)
    norm = bundle.manifest.normalization
    trained_share = norm.weights.st / (norm.weights.st + norm.weights.ae)

    started = time.perf_counter()
    found = raw_maps(bundle, image_groups(bundle, args.data), args.threads)
    scoring_s = time.perf_counter() - started
    _, threshold_maps = calibration_parts(found["held_out"])

    def scores(share: float) -> dict[str, np.ndarray]:
        weights = MapWeights(st=share, ae=1.0 - share)
        scorer = MapScorer(norm.model_copy(update={"weights": weights}))
        groups = {"threshold": threshold_maps, "good": found["good"], "bad": found["defective"]}
        return {k: np.array([reading_score(r, scorer) for r in v]) for k, v in groups.items()}

    trained = scores(trained_share)
    rows: list[dict[str, Any]] = []
    for share in (float(s) for s in args.shares.split(",") if s):
        s = scores(share)
        choice = choose_threshold(s["threshold"], policy="robust", target_frr=args.target_frr)
        at = outcome(s["good"], s["bad"], choice.threshold)
        paired = auroc_difference(s["good"], s["bad"], trained["good"], trained["bad"])
        rows.append(
            {
                "st_share": share,
                "image_auroc": auroc(s["good"], s["bad"]),
                "image_auroc_95ci": auroc_interval(s["good"], s["bad"]),
                "vs_trained": {k: round(v, 6) for k, v in paired.items()},
                "threshold": choice.threshold,
                "false_rejects": at["false_rejects"],
                "escapes": at["escapes"],
            }
        )
    report = {
        "what": __doc__.splitlines()[0],
        "bundle": Path(args.bundle).name,
        "data": Path(args.data).name,
        "trained_st_share": trained_share,
        "tiled": bundle.manifest.model.input.tiling is not None,
        "threshold_images": len(threshold_maps),
        "test_images": {"good": len(found["good"]), "defective": len(found["defective"])},
        "scoring_s": round(scoring_s, 1),
        "rows": rows,
        "command": " ".join(["python", "benchmarks/map_parts.py", *sys.argv[1:]]),
    }
    out = Path(args.out or RESULTS / f"map_parts_{Path(args.data).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['data']} ({report['bundle']}): st share, image AUROC, paired, FR, escapes")
    for r in rows:
        d = r["vs_trained"]
        print(
            f"  {r['st_share']:.2f}  {r['image_auroc']:.3f}  "
            f"{d['difference']:+.3f} ({d['ci_low']:+.3f}..{d['ci_high']:+.3f})  "
            f"{r['false_rejects']['count']}/{r['false_rejects']['of']}  "
            f"{r['escapes']['count']}/{r['escapes']['of']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
