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
escapes are taken on the set's test split. Each row also holds every image's score and the
threshold policies' table of ``benchmarks/threshold_policies.py`` on them (``policies``):
each scorer is one more distribution of maxima to try a policy on.

    python benchmarks/feature_knn.py --data ../shared/data/magnetic_tile \\
        --data ../shared/data/kolektorsdd --tiling kolektorsdd=0.6

A teacher-quality proxy, the same nearest-patch scoring on other features (a student run
costs hours on a CPU, this minutes): ``--features targets`` scores the targets a teacher is
distilled to (``--projection pca`` or ``pca-rotated``, ``--target-layout points`` or
``mean``, fitted on ``--photos`` as ``edge-ad pretrain-teacher`` fits it), ``--features
teacher:FILE`` (or ``teacher:default``, ``teacher:random``) a teacher PDN's outputs. Both
are taken at every second point of the PDN's 56x56 grid (8 px apart, as the Lite0 patches).
``--standardise`` scales each channel to mean 0 and std 1 over the fit images' patches
first, as EfficientAD standardises the teacher's channels before the student learns them.

    python benchmarks/feature_knn.py --data ../shared/data/magnetic_tile \\
        --features targets --projection pca-rotated --photos ../shared/data/natural \\
        --standardise --results /tmp/knn_targets_rotated.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import edge_sdk.training  # noqa: F401  (first, so its OpenMP wait policy precedes torch)

# isort: split
import numpy as np
import torch
import torch.nn.functional as F
from threshold_policies import policy_rows  # beside this script

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


Extract = Callable[[np.ndarray], torch.Tensor]  # uint8 [N,3,256,256] -> patches [M, C]


def _grid_patches(maps: torch.Tensor) -> torch.Tensor:
    """[N,C,56,56] maps on the PDN's grid -> [N*28*28, C]: every second point, 8 px apart."""
    maps = maps[..., ::2, ::2]
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def fitted_targets(
    photos: Path, projection: str, projection_photos: int = 256, layout: str = "points"
) -> tuple[Any, Any]:
    """The backbone and projection of ``edge-ad pretrain-teacher``'s defaults (Lite0, the
    projection fitted on 256 photos, seed 0) in ``layout``."""
    from edge_sdk.training.backbones import load_backbone
    from edge_sdk.training.teacher import TeacherConfig, projection_windows
    from edge_sdk.training.teacher_photos import Photos
    from edge_sdk.training.teacher_targets import WINDOW, fit_projection

    config = TeacherConfig(
        photos=photos,
        out=Path("unused.pth"),
        projection=projection,  # type: ignore[arg-type]
        target_layout=layout,  # type: ignore[arg-type]
        projection_images=projection_photos,
    )
    backbone = load_backbone(config.backbone, image_size=WINDOW).eval()
    fitted = fit_projection(
        backbone,
        projection_windows(Photos(photos), config),
        seed=config.seed,
        kind=config.projection,
        layout=config.target_layout,
    )
    return backbone, fitted


def target_patches(
    photos: Path, projection: str, projection_photos: int = 256, layout: str = "points"
) -> tuple[Extract, dict[str, Any]]:
    """The distillation targets of :func:`fitted_targets` of each image inside a reflected
    32 px border."""
    from edge_sdk.training.teacher_targets import CONTEXT, targets

    backbone, fitted = fitted_targets(photos, projection, projection_photos, layout)

    def extract(image: np.ndarray) -> torch.Tensor:
        window = F.pad(torch.as_tensor(image).float() / 255.0, (CONTEXT,) * 4, mode="reflect")
        with torch.inference_mode():
            return _grid_patches(targets(backbone, fitted, window))

    return extract, {"targets": backbone.record(), "projection": fitted.record()}


def teacher_patches(spec: str) -> tuple[Extract, dict[str, Any]]:
    """A teacher PDN-S's outputs as training runs it (``default``: the shipped teacher,
    ``random``: a seeded random one)."""
    from edge_sdk.training import networks as nets
    from edge_sdk.training.inference_graph import normalise
    from edge_sdk.training.recipe import resolve_teacher

    source = resolve_teacher(None if spec == "default" else spec, "efficientad-s")
    pdn = nets.teacher("efficientad-s")
    if source.path is not None:
        nets.load_teacher_weights(pdn, source.path)
    pdn = pdn.float().eval()

    def extract(image: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return _grid_patches(pdn(normalise(torch.as_tensor(image)).float()))

    name = "random" if source.path is None else source.path.name
    return extract, {"teacher": name, "sha256": source.sha256}


def image_patches(extract: Extract, path: Path, tiling: Tiling | None) -> torch.Tensor:
    """The patch features of one image (of all its tiles, when tiled)."""
    return extract(load_model_inputs([path], tiling=tiling))


class Scorer:
    """An image's score: its patches' largest distance to their nearest bank patch."""

    def __init__(self, extract: Extract, bank: torch.Tensor, tiling: Tiling | None) -> None:
        self.extract, self.bank, self.tiling = extract, bank.contiguous(), tiling
        self.bank_sq = (bank * bank).sum(1)
        self.seconds: list[float] = []

    def __call__(self, path: Path) -> float:
        started = time.perf_counter()
        q = image_patches(self.extract, path, self.tiling)
        d = (q * q).sum(1, keepdim=True) - 2.0 * q @ self.bank.T + self.bank_sq
        score = float(d.min(1).values.clamp_min(0).max().sqrt())
        self.seconds.append(time.perf_counter() - started)
        return score


def standardised(extract: Extract, patches: torch.Tensor) -> tuple[Extract, torch.Tensor]:
    """``extract`` and ``patches`` with each channel scaled to mean 0, std 1 over ``patches``."""
    mean, std = patches.mean(0), patches.std(0).clamp_min(1e-6)
    return (lambda image: (extract(image) - mean) / std), (patches - mean) / std


def measure(data: Path, extract: Extract, args: argparse.Namespace, scale: str | None) -> dict:
    started = time.perf_counter()
    tiling = Tiling(grid=TileGrid(scale=float(scale))) if scale else None
    good = find_good_images(data).files
    split = split_validation(len(good), seed=args.seed)
    fit_ids = np.random.default_rng(args.seed).permutation(split.train)[: args.fit_images]
    patches = torch.cat([image_patches(extract, good[i], tiling) for i in fit_ids])
    if args.standardise:
        extract, patches = standardised(extract, patches)
    score = Scorer(extract, patches[torch.randperm(len(patches))[: args.bank]], tiling)
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
        # More score distributions for the threshold policies than trained bundles give.
        "policies": policy_rows(
            np.array(held), np.array(scores["good"]), np.array(scores["bad"]), target_frr=0.01
        ),
        "scores": {
            "held_out": [round(v, 6) for v in held],
            "test_good": [round(v, 6) for v in scores["good"]],
            "test_defective": [round(v, 6) for v in scores["bad"]],
        },
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
    parser.add_argument(
        "--features",
        default="lite0",
        help="lite0 (the backbone's patches; see --backbone), targets, or "
        "teacher:FILE|default|random",
    )
    parser.add_argument("--projection", choices=("pca", "pca-rotated"), default="pca")
    parser.add_argument("--photos", type=Path, help="for --features targets: generic photos")
    parser.add_argument("--projection-photos", type=int, default=256, metavar="N")
    parser.add_argument(
        "--target-layout",
        choices=["points", "mean"],
        default="points",
        help="for --features targets: what a target keeps of its patch (pretrain-teacher's)",
    )
    parser.add_argument(
        "--standardise", action="store_true", help="each channel to mean 0, std 1 first"
    )
    parser.add_argument("--fit-images", type=int, default=200)
    parser.add_argument("--bank", type=int, default=20_000, help="patches in the bank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(RESULTS / "feature_knn.json"))
    args = parser.parse_args(argv)
    scales = dict(item.split("=", 1) for item in args.tiling)

    torch.manual_seed(args.seed)
    if args.features == "lite0":
        backbone = lite_backbone(args.backbone).eval()
        extract: Extract = lambda image: patch_features(backbone, image)  # noqa: E731
        described = backbone.record() | {"features": "strides 8 and 16, 3x3 mean, at stride 8"}
    elif args.features == "targets":
        if args.photos is None:
            parser.error("--features targets needs --photos (the projection is fitted on them)")
        extract, described = target_patches(
            args.photos, args.projection, args.projection_photos, args.target_layout
        )
    elif args.features.startswith("teacher:"):
        extract, described = teacher_patches(args.features.removeprefix("teacher:"))
    else:
        parser.error(f"--features {args.features!r}: expected lite0, targets or teacher:FILE")
    rows = []
    for data in map(Path, args.data):
        row = measure(data, extract, args, scales.get(data.name))
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
        # --features lite0 means "the backbone's patches", whichever --backbone that is.
        "features": {
            "kind": args.backbone if args.features == "lite0" else args.features,
            "standardised": args.standardise,
        }
        | described,
        "seed": args.seed,
        "rows": rows,
    }
    Path(args.results).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
