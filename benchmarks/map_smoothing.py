"""Does smoothing the anomaly map before its maximum separate defects from good parts
better?

A part's score is the highest value of its combined map (64x64 cells for an untiled S
bundle, the stitched frame map for a tiled one). A single noisy cell on a good part can
set that maximum; a Gaussian blur of a cell or two averages such cells away, while a
defect that covers several cells keeps most of its height. This scores a trained
bundle's held-out good training images (named in its training record) and the test set
through the float32 graph once, then for each blur sigma (in map cells; 0 = the
maximum as shipped) reads every score again, sets the threshold with the bundle's
default policy (``robust``, 1 % false rejects) on the same held-out images that set the
bundle's threshold, and counts false rejects and escapes on the test set.

Choose a sigma on one data set and confirm it on another:

    python benchmarks/map_smoothing.py --bundle mt.bundle ../shared/data/magnetic_tile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SIGMAS = (0.0, 0.5, 1.0, 2.0, 4.0)


def smoothed_score(anomaly_map: np.ndarray, sigma: float) -> float:
    """The map's maximum after a Gaussian blur of ``sigma`` cells (0: the plain maximum)."""
    if sigma == 0:
        return float(np.max(anomaly_map))
    blurred = cv2.GaussianBlur(anomaly_map, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return float(np.max(blurred))


def main() -> int:
    from edge_sdk import Bundle, Inspector
    from edge_sdk.calibration.quantiles import split_indices
    from edge_sdk.calibration.thresholds import choose_threshold, outcome
    from edge_sdk.evaluation.dataset import find_test_set, read_image
    from edge_sdk.statistics import auroc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="MVTec-style set the bundle was trained on")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--sigmas", default=",".join(str(s) for s in SIGMAS))
    parser.add_argument("--target-frr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/...)")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        print(f"skipped: no data set at {args.data}", file=sys.stderr)
        return 0
    sigmas = [float(s) for s in args.sigmas.split(",")]
    bundle = Bundle.open(args.bundle)
    inspector = Inspector.open(
        bundle, device="cpu", variant="fp32", recheck=False, threads=args.threads
    )

    def maps(paths: list[Path]) -> list[np.ndarray]:
        out = []
        for path in paths:
            result = inspector.inspect(read_image(path))
            if result.anomaly_map is None:
                raise SystemExit(f"{path}: no map ({result.error})")
            out.append(result.anomaly_map.astype(np.float32))
        return out

    started = time.perf_counter()
    names = bundle.manifest.training["validation_split"]["files"]
    held_out = maps([Path(args.data) / "train" / "good" / n for n in names])
    parts = split_indices(len(held_out))
    threshold_maps = held_out if parts is None else [held_out[i] for i in parts[1]]
    test = find_test_set(args.data)
    good = maps([s.path for s in test.good])
    bad = maps([s.path for s in test.defective])
    scoring_s = time.perf_counter() - started

    rows: list[dict[str, Any]] = []
    for sigma in sigmas:
        calib = np.array([smoothed_score(m, sigma) for m in threshold_maps])
        good_scores = np.array([smoothed_score(m, sigma) for m in good])
        bad_scores = np.array([smoothed_score(m, sigma) for m in bad])
        choice = choose_threshold(calib, policy="robust", target_frr=args.target_frr)
        at = outcome(good_scores, bad_scores, choice.threshold)
        rows.append(
            {
                "sigma_cells": sigma,
                "image_auroc": auroc(good_scores, bad_scores),
                "threshold": choice.threshold,
                "false_rejects": at["false_rejects"],
                "escapes": at["escapes"],
                "expected_frr_95ci": choice.record["expected_false_reject_rate_95ci"],
            }
        )
    report = {
        "bundle": Path(args.bundle).name,
        "data": Path(args.data).name,
        "tiled": bundle.manifest.model.input.tiling is not None,
        "threshold_images": len(threshold_maps),
        "test_images": {"good": len(good), "defective": len(bad)},
        "scoring_s": round(scoring_s, 1),
        "rows": rows,
        "command": " ".join(["python", "benchmarks/map_smoothing.py", *sys.argv[1:]]),
    }
    out = Path(args.out or RESULTS / f"map_smoothing_{Path(args.data).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['data']} ({report['bundle']}): threshold on {len(threshold_maps)} images")
    print("sigma  image AUROC  false rejects  escapes")
    for r in rows:
        fr, esc = r["false_rejects"], r["escapes"]
        print(
            f"{r['sigma_cells']:5.1f}  {r['image_auroc']:11.3f}  {fr['count']:>5}/{fr['of']:<7}"
            f"  {esc['count']:>3}/{esc['of']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
