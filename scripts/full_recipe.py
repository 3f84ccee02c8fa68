#!/usr/bin/env python3
"""The reference budget in one command, for a machine with a CUDA GPU: distil the teacher
(60,000 steps at batch 16), train EfficientAD on each data set with it (70,000 steps) and
evaluate each bundle on its test split. Everything goes to one folder:

    OUT/teacher.pth, OUT/teacher.pth.json     the teacher and its record
    OUT/<set>.bundle, OUT/<set>.eval/         each bundle and its evaluation (report, pictures)
    OUT/figures.json                          image AUROC, AU-PRO, rates at the threshold,
                                              wall times, device, the commands' settings

Each phase checkpoints; run the same command with --resume after an interruption, and
finished phases are skipped. A tiny budget (--teacher-steps 2 --steps 2 --projection-photos 4)
checks the whole chain on any machine in a few minutes:

    python scripts/full_recipe.py --photos ../shared/data/natural \\
        --data ../shared/data/magnetic_tile --data ../shared/data/kolektorsdd --out gpu_run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import edge_sdk.training  # noqa: F401  (first, so its OpenMP wait policy precedes torch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", required=True, help="generic photos (teacher, penalty)")
    parser.add_argument("--data", required=True, action="append", help="MVTec-style set")
    parser.add_argument("--out", required=True, help="folder for everything this writes")
    parser.add_argument("--model", choices=["s", "m"], default="s")
    parser.add_argument("--backbone", default="lite0")
    parser.add_argument("--teacher-steps", type=int, default=60_000)
    parser.add_argument("--teacher-batch", type=int, default=16)
    parser.add_argument(
        "--projection-photos", type=int, default=256, help="photos the teacher's PCA is fitted on"
    )
    parser.add_argument("--steps", type=int, default=70_000, help="student steps per set")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from edge_sdk.evaluation.report import evaluate_bundle
    from edge_sdk.training.recipe import TrainConfig, resolve_device
    from edge_sdk.training.teacher import TeacherConfig, distill
    from edge_sdk.training.train import train

    architecture = f"efficientad-{args.model}"
    device = resolve_device(args.device)
    if device.type != "cuda":
        print("full_recipe: no CUDA GPU: the reference budget takes days here", file=sys.stderr)
    out = Path(args.out).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "resume")},
        "sets": {},
    }
    teacher = out / "teacher.pth"
    started = time.perf_counter()
    if not teacher.exists():
        distill(
            TeacherConfig(
                photos=Path(args.photos),
                out=teacher,
                architecture=architecture,
                backbone=args.backbone,
                steps=args.teacher_steps,
                batch_size=args.teacher_batch,
                projection_images=args.projection_photos,
                device=args.device,
                resume=args.resume,
            )
        )
    figures["teacher"] = json.loads(teacher.with_name(teacher.name + ".json").read_text())
    figures["teacher_wall_s"] = round(time.perf_counter() - started, 1)
    for data in map(Path, args.data):
        bundle = out / f"{data.name}.bundle"
        t0 = time.perf_counter()
        if not bundle.exists():
            train(
                TrainConfig(
                    data=data,
                    out=bundle,
                    architecture=architecture,
                    teacher=teacher,
                    steps=args.steps,
                    penalty=Path(args.photos),
                    device=args.device,
                    resume=args.resume,
                    dataset_label=data.name,
                )
            )
        trained_s = time.perf_counter() - t0
        eval_dir = out / f"{data.name}.eval"
        report = evaluate_bundle(bundle, data, out_dir=eval_dir, variant="fp32")
        pixel = report["pixel"] or {}
        figures["sets"][data.name] = {
            "image_auroc": report["image"]["auroc"],
            "pixel_auroc": pixel.get("auroc"),
            "au_pro": pixel.get("au_pro"),
            "at_threshold": report["at_threshold"],
            "train_wall_s": round(trained_s, 1),
        }
        print(
            f"{data.name}: image AUROC {report['image']['auroc']:.4f}, AU-PRO "
            f"{pixel.get('au_pro')}, escapes {report['at_threshold']['escapes']['count']}/"
            f"{report['at_threshold']['escapes']['of']}"
        )
    (out / "figures.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"wrote {out}/figures.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
