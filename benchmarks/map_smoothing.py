"""How should a part's score be read from its anomaly map: the plain maximum, the
maximum of a blurred map, or with the map's border treated apart?

A part's score is the highest value of its combined map (64x64 cells for an untiled S
bundle, the stitched frame map for a tiled one). Two things other than a defect can set
that maximum:

- a single noisy cell on a good part: a Gaussian blur of a cell or two (``--sigmas``)
  averages it away, while a defect over several cells keeps most of its height;
- the map's border, where the networks see their own zero padding and the part's edge
  (on magnetic tile, the crop's edge): ``--margins`` leaves the outer cells out of the
  maximum, blind to defects there; ``--rings`` keeps them but maps the border ring's
  values onto the interior's scale (its 0.9 and 0.995 quantiles onto the interior's,
  fitted on the held-out images that set the bundle's quantiles; never raised).

It scores a trained bundle's held-out good training images (named in its training
record) and the test set through the float32 graph once (``--maps`` keeps the maps for
another reading), then for each reading sets the threshold with the bundle's default
policy (``robust``, 1 % false rejects) on the held-out images that set the bundle's
threshold, and counts false rejects and escapes on the test set. The padded cells the
bundle adds at the map's edge (``pad``) always count as border.

Choose a reading on one data set and confirm it on another:

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
from bundle_images import calibration_parts, image_groups, missing_data

RESULTS = Path(__file__).resolve().parent / "results"
SIGMAS = (0.0, 0.5, 1.0, 2.0, 4.0)
BORDERS = (1, 2, 4)


def smoothed_score(anomaly_map: np.ndarray, sigma: float) -> float:
    """The map's maximum after a Gaussian blur of ``sigma`` cells (0: the plain maximum)."""
    if sigma == 0:
        return float(np.max(anomaly_map))
    blurred = cv2.GaussianBlur(anomaly_map, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return float(np.max(blurred))


def border_mask(shape: tuple[int, ...], width: int) -> np.ndarray:
    """True on the outer ``width`` cells of a map of ``shape``.

    >>> border_mask((4, 5), 1).sum()
    np.int64(14)
    """
    mask = np.ones(shape[:2], bool)
    mask[width : shape[0] - width, width : shape[1] - width] = False
    return mask


class RingScale:
    """The border ring's values mapped onto the interior's scale: an affine map that
    takes the ring's q_a, q_b (over the fitting maps) to the interior's, applied only
    where it lowers a value, so the border can never reject more than before."""

    def __init__(self, maps: list[np.ndarray], width: int) -> None:
        from edge_sdk.calibration.quantiles import Q_A, Q_B

        self.width = width
        ring = np.concatenate([m[border_mask(m.shape, width)] for m in maps])
        inner = np.concatenate([m[~border_mask(m.shape, width)] for m in maps])
        self.ring_q = np.quantile(ring, (Q_A, Q_B))
        self.inner_q = np.quantile(inner, (Q_A, Q_B))

    def score(self, anomaly_map: np.ndarray) -> float:
        ring = border_mask(anomaly_map.shape, self.width)
        (ra, rb), (ia, ib) = self.ring_q, self.inner_q
        scaled = ia + (anomaly_map[ring] - ra) * (ib - ia) / (rb - ra)
        values = np.minimum(anomaly_map[ring], scaled)
        return float(max(np.max(values), np.max(anomaly_map[~ring])))


def _ragged(maps: list[np.ndarray]) -> np.ndarray:
    # An object array of maps, also when they share a shape (np.array would stack them).
    out = np.empty(len(maps), dtype=object)
    for i, anomaly_map in enumerate(maps):
        out[i] = anomaly_map
    return out


def main() -> int:
    from edge_sdk import Bundle, Inspector
    from edge_sdk.calibration.thresholds import choose_threshold, outcome
    from edge_sdk.evaluation.dataset import read_image
    from edge_sdk.runtime.bundle import file_sha256
    from edge_sdk.statistics import auroc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="MVTec-style set the bundle was trained on")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--sigmas", default=",".join(str(s) for s in SIGMAS))
    parser.add_argument("--margins", default=",".join(str(b) for b in BORDERS))
    parser.add_argument("--rings", default=",".join(str(b) for b in BORDERS))
    parser.add_argument("--maps", help=".npz of the maps: read if it exists, else written")
    parser.add_argument("--target-frr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/...)")
    args = parser.parse_args()
    if missing_data(args.data):
        return 0
    bundle = Bundle.open(args.bundle)
    pad = bundle.manifest.normalization.pad

    def maps(groups: dict[str, list[Path]]) -> dict[str, list[np.ndarray]]:
        with Inspector.open(
            bundle, device="cpu", variant="fp32", recheck=False, threads=args.threads
        ) as inspector:
            out: dict[str, list[np.ndarray]] = {}
            for group, paths in groups.items():
                out[group] = []
                for path in paths:
                    result = inspector.inspect(read_image(path))
                    if result.anomaly_map is None:
                        raise SystemExit(f"{path}: no map ({result.error})")
                    out[group].append(result.anomaly_map.astype(np.float32))
            return out

    started = time.perf_counter()
    paths = image_groups(bundle, args.data)
    cache = Path(args.maps) if args.maps else None
    # The cache holds the maps of these images through this bundle, nothing else.
    key = [str(p) for v in paths.values() for p in v] + [file_sha256(args.bundle)]
    if cache is not None and cache.is_file():
        stored = np.load(cache, allow_pickle=True)
        if "key" not in stored or stored["key"].tolist() != key:
            raise SystemExit(f"{cache}: maps of another bundle or images; delete it to rescore")
        found = {k: [np.asarray(m, np.float32) for m in stored[k]] for k in paths}
    else:
        found = maps(paths)
        if cache is not None:
            np.savez_compressed(
                cache, key=np.array(key), **{k: _ragged(v) for k, v in found.items()}
            )
    scoring_s = time.perf_counter() - started

    quantile_maps, threshold_maps = calibration_parts(found["held_out"])

    readings: list[tuple[str, float, Any]] = []
    for sigma in (float(s) for s in args.sigmas.split(",") if s):
        readings.append(("blur", sigma, lambda m, s=sigma: smoothed_score(m, s)))
    for width in (int(w) for w in args.margins.split(",") if w):
        readings.append(
            ("margin", width, lambda m, w=width + pad: float(np.max(m[~border_mask(m.shape, w)])))
        )
    for width in (int(w) for w in args.rings.split(",") if w):
        readings.append(("ring", width, RingScale(quantile_maps, width + pad).score))

    rows: list[dict[str, Any]] = []
    for reading, cells, score in readings:
        calib = np.array([score(m) for m in threshold_maps])
        good_scores = np.array([score(m) for m in found["good"]])
        bad_scores = np.array([score(m) for m in found["defective"]])
        choice = choose_threshold(calib, policy="robust", target_frr=args.target_frr)
        at = outcome(good_scores, bad_scores, choice.threshold)
        rows.append(
            {
                "reading": reading,
                "cells": cells,
                "image_auroc": auroc(good_scores, bad_scores),
                "threshold": choice.threshold,
                "false_rejects": at["false_rejects"],
                "escapes": at["escapes"],
                "expected_frr_95ci": choice.record["expected_false_reject_rate_95ci"],
            }
        )

    def share_on_border(group: list[np.ndarray]) -> float:
        hits = [
            border_mask(m.shape, pad + 1)[np.unravel_index(np.argmax(m), m.shape)] for m in group
        ]
        return round(float(np.mean(hits)), 3)

    report = {
        "bundle": Path(args.bundle).name,
        "data": Path(args.data).name,
        "tiled": bundle.manifest.model.input.tiling is not None,
        "pad_cells": pad,
        "threshold_images": len(threshold_maps),
        "test_images": {"good": len(found["good"]), "defective": len(found["defective"])},
        "maximum_on_border": {  # the outer cell and the padding: where the plain maximum lies
            k: share_on_border(v) for k, v in found.items()
        },
        "border_share_of_cells": round(
            float(np.mean([border_mask(m.shape, pad + 1).mean() for m in found["good"]])), 3
        ),
        "scoring_s": round(scoring_s, 1),
        "rows": rows,
        "command": " ".join(["python", "benchmarks/map_smoothing.py", *sys.argv[1:]]),
    }
    out = Path(args.out or RESULTS / f"map_smoothing_{Path(args.data).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['data']} ({report['bundle']}): threshold on {len(threshold_maps)} images")
    print(f"maximum on the border (outer cell + pad): {report['maximum_on_border']}")
    print("reading  cells  image AUROC  false rejects  escapes")
    for r in rows:
        fr, esc = r["false_rejects"], r["escapes"]
        print(
            f"{r['reading']:7s}  {r['cells']:5g}  {r['image_auroc']:11.3f}  "
            f"{fr['count']:>5}/{fr['of']:<7}  {esc['count']:>3}/{esc['of']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
