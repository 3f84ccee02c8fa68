"""A training-free baseline for the verdict: nearest-neighbour distance of EfficientNet-Lite
patch features to a bank of good patches (PatchCore's idea, with a random bank).

The question it answers: what do a pretrained backbone's features catch with no training
at all, next to an EfficientAD student trained for the CPU budget (the rows of
``budget_curve.json``)? Nothing here is in the product.

Per set: the held-out images are `edge-ad train`'s (``split_validation``, seed 0); up to
``--fit-images`` of the others give their patch features, of which ``--bank`` chosen at
random form the bank. A patch feature is the backbone's stride-8 and stride-16 blocks, each
averaged over its 3x3 neighbours (the stride-16 one resized to the stride-8 grid) and
concatenated; an image's score is its patches' largest distance to their nearest bank
entry (the largest over its tiles, when tiled). The threshold comes from the held-out
images by the product's default policy (`robust`, 1 % target); AUROC, false rejects and
escapes are taken on the set's test split.

    python benchmarks/feature_knn.py --data ../shared/data/magnetic_tile \\
        --data ../shared/data/kolektorsdd --tiling kolektorsdd=0.6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import edge_sdk.training  # noqa: F401  (first, so its OpenMP wait policy precedes torch)

# isort: split
import numpy as np
import torch
import torch.nn.functional as F

from edge_sdk.calibration.thresholds import choose_threshold, outcome
from edge_sdk.evaluation.dataset import find_test_set
from edge_sdk.runtime.tiling import TileGrid, Tiling
from edge_sdk.statistics import auroc, auroc_interval
from edge_sdk.training.backbones import LITE_BACKBONES, lite_backbone
from edge_sdk.training.data import find_good_images, load_model_inputs, split_validation
from edge_sdk.training.teacher_file import hardware

RESULTS = Path(__file__).resolve().parent / "results"


def patch_features(backbone: Any, image: np.ndarray) -> torch.Tensor:
    """uint8 [N,3,256,256] -> [N*32*32, C]: stride 8 and 16, each a 3x3 mean, at stride 8."""
    by_stride = dict(zip(backbone.strides, range(len(backbone.strides)), strict=True))
    with torch.inference_mode():
        maps = backbone(torch.as_tensor(image).float() / 255.0)
        fine = F.avg_pool2d(maps[by_stride[8]], 3, 1, 1)
        coarse = F.avg_pool2d(maps[by_stride[16]], 3, 1, 1)
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear")
        patches = torch.cat([fine, coarse], 1)
    return patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])


def image_patches(backbone: Any, path: Path, tiling: Tiling | None) -> torch.Tensor:
    """The patch features of one image (of all its tiles, when tiled)."""
    return patch_features(backbone, load_model_inputs([path], tiling=tiling))


class Scorer:
    """An image's score: its patches' largest distance to their nearest bank patch."""

    def __init__(self, backbone: Any, bank: torch.Tensor, tiling: Tiling | None) -> None:
        self.backbone, self.bank, self.tiling = backbone, bank.contiguous(), tiling
        self.bank_sq = (bank * bank).sum(1)
        self.seconds: list[float] = []

    def __call__(self, path: Path) -> float:
        started = time.perf_counter()
        q = image_patches(self.backbone, path, self.tiling)
        d = (q * q).sum(1, keepdim=True) - 2.0 * q @ self.bank.T + self.bank_sq
        score = float(d.min(1).values.clamp_min(0).max().sqrt())
        self.seconds.append(time.perf_counter() - started)
        return score


def measure(data: Path, backbone: Any, args: argparse.Namespace, scale: str | None) -> dict:
    started = time.perf_counter()
    tiling = Tiling(grid=TileGrid(scale=float(scale))) if scale else None
    good = find_good_images(data).files
    split = split_validation(len(good), seed=args.seed)
    fit_ids = np.random.default_rng(args.seed).permutation(split.train)[: args.fit_images]
    patches = torch.cat([image_patches(backbone, good[i], tiling) for i in fit_ids])
    score = Scorer(backbone, patches[torch.randperm(len(patches))[: args.bank]], tiling)
    fit_s = time.perf_counter() - started

    held = [score(good[i]) for i in split.validation]
    scores: dict[str, list[float]] = {"good": [], "bad": []}
    kinds: dict[str, list[float]] = {}
    for item in find_test_set(data).samples:
        value = score(item.path)
        scores["bad" if item.defect_type else "good"].append(value)
        if item.defect_type:
            kinds.setdefault(item.defect_type, []).append(value)
    choice = choose_threshold(held)
    at = outcome(scores["good"], scores["bad"], choice.threshold)
    return {
        "data": data.name,
        "tiling": scale,
        "fit_images": len(fit_ids),
        "bank": list(score.bank.shape),
        "image_auroc": auroc(scores["good"], scores["bad"]),
        "image_auroc_95ci": auroc_interval(scores["good"], scores["bad"]),
        "per_defect_type": {k: auroc(scores["good"], v) for k, v in sorted(kinds.items())},
        "threshold": choice.threshold,
        "threshold_images": len(held),
        "false_rejects": at["false_rejects"],
        "escapes": at["escapes"],
        "expected_frr_95ci": choice.record["expected_false_reject_rate_95ci"],
        "fit_s": round(fit_s, 1),
        "score_ms_median": round(1000 * statistics.median(score.seconds), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, action="append", help="MVTec-style set")
    parser.add_argument(
        "--tiling", action="append", default=[], metavar="SET=SCALE", help="tile this set"
    )
    parser.add_argument("--backbone", choices=LITE_BACKBONES, default="lite0")
    parser.add_argument("--fit-images", type=int, default=200)
    parser.add_argument("--bank", type=int, default=20_000, help="patches in the bank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(RESULTS / "feature_knn.json"))
    args = parser.parse_args(argv)
    scales = dict(item.split("=", 1) for item in args.tiling)

    torch.manual_seed(args.seed)
    backbone = lite_backbone(args.backbone).eval()
    rows = []
    for data in map(Path, args.data):
        row = measure(data, backbone, args, scales.get(data.name))
        rows.append(row)
        fr, esc = row["false_rejects"], row["escapes"]
        print(
            f"{row['data']:>16}: image AUROC {row['image_auroc']:.3f}, false rejects "
            f"{fr['count']}/{fr['of']}, escapes {esc['count']}/{esc['of']}, fit "
            f"{row['fit_s']:.0f} s, {row['score_ms_median']:.0f} ms an image",
            flush=True,
        )
    doc = {
        "what": " ".join(__doc__.split("\n\n")[0].split()),
        "command": "python benchmarks/feature_knn.py " + " ".join(sys.argv[1:]),
        "hardware": hardware(torch.device("cpu")),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "timing": "fit_s and score_ms_median are wall times on this machine as it was loaded "
        "(see load_average): a sign of cost, not a latency benchmark",
        "backbone": backbone.record() | {"features": "strides 8 and 16, 3x3 mean, at stride 8"},
        "seed": args.seed,
        "rows": rows,
    }
    Path(args.results).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
