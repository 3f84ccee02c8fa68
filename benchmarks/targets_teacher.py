"""What a perfectly distilled teacher would buy the student: the distillation targets
themselves as the teacher.

``edge-ad pretrain-teacher`` distils a PDN to targets computed from the Lite0 backbone
(``edge_sdk.training.teacher_targets``); the shipped PDN reaches them only roughly (loss
0.76 after 1,200 steps at batch 8). Here the student learns the targets directly: the
teacher is Lite0 on the image inside a reflected 32 px border, sampled at the PDN's
receptive-field centres and projected as ``pretrain-teacher`` projects (fitted on the same
photos with the same seed). Everything else is ``benchmarks/budget_curve.py``'s run with
``--teacher random`` (whose random PDN is built and thrown away, so the student starts
from the same weights as every other teacher's run): the same steps, calibration and
float32 evaluation. Rows are labelled ``targets:PROJECTION/LAYOUT``; the bundles' own
training records still say ``random`` (the PDN that was built and thrown away). Their graphs
are ONNX opset 18: the exporter cannot convert the reflected border (ONNX Pad) down to 17.

It is an upper bound for distillation at this student budget, not a product setting: the
bundle's graph carries Lite0 instead of a PDN.

    python benchmarks/targets_teacher.py --photos ../shared/data/natural \\
        --projection pca-rotated --layout mean -- --data ../shared/data/magnetic_tile \\
        --penalty ../shared/data/natural --milestones 1000 --out runs/tt
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

# isort: off
import edge_sdk.training  # noqa: F401  (first, so its OpenMP wait policy precedes torch)
import torch
import torch.nn.functional as F
from torch import nn

# isort: on


class TargetsCore(nn.Module):
    """RGB 0..1 [N,3,256,256] -> the distillation targets [N,384,56,56]."""

    def __init__(self, backbone: nn.Module, projection: object) -> None:
        super().__init__()
        self.backbone, self.projection = backbone, projection

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        from edge_sdk.training.teacher_targets import CONTEXT, targets

        window = F.pad(rgb, (CONTEXT,) * 4, mode="reflect")
        return targets(self.backbone, self.projection, window)  # type: ignore[arg-type]


def targets_teacher(photos: Path, projection: str, layout: str) -> nn.Sequential:
    """A teacher that takes the PDN's ImageNet-normalised input and emits the targets: a 1x1
    convolution back to 0..1 first and an identity 1x1 convolution last, where the
    inference graph folds the input normalisation and the output standardisation."""
    from feature_knn import fitted_targets

    from edge_sdk.training.inference_graph import IMAGENET_MEAN, IMAGENET_STD
    from edge_sdk.training.networks import TEACHER_CHANNELS

    backbone, fitted = fitted_targets(photos, projection, layout=layout)
    to_rgb = nn.Conv2d(3, 3, 1)
    last = nn.Conv2d(TEACHER_CHANNELS, TEACHER_CHANNELS, 1)
    with torch.no_grad():
        std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        to_rgb.weight.copy_(torch.diag(std).view(3, 3, 1, 1))
        to_rgb.bias.copy_(mean)
        last.weight.copy_(torch.eye(TEACHER_CHANNELS).view(TEACHER_CHANNELS, -1, 1, 1))
        last.bias.zero_()
    return nn.Sequential(to_rgb, TargetsCore(backbone, fitted), last)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--projection", default="pca-rotated", choices=("pca", "pca-rotated"))
    parser.add_argument("--layout", default="points", choices=("points", "mean"))
    parser.add_argument("curve", nargs=argparse.REMAINDER, help="-- budget_curve.py's options")
    args = parser.parse_args()
    curve = [a for a in args.curve if a != "--"]
    if "--teacher" in curve:
        parser.error("the teacher is the targets; give budget_curve.py's other options")
    if "--results" not in curve:
        parser.error("give budget_curve.py a --results file of its own (rows are relabelled)")

    import budget_curve

    from edge_sdk.training import networks

    teacher = targets_teacher(args.photos, args.projection, args.layout)
    build = networks.teacher

    def patched(arch: str) -> nn.Sequential:
        build(arch)  # the same draws from torch's generator as a PDN teacher's run
        return teacher

    networks.teacher = patched  # type: ignore[assignment]
    # The reflected border (ONNX Pad) does not convert down to opset 17 (TensorRT 8.5's
    # limit, the product's default); ONNX Runtime runs 18.
    from edge_sdk.training import export, onnx_export

    export.export_onnx = functools.partial(onnx_export.export_onnx, opset=18)  # type: ignore[assignment]
    label = f"targets:{args.projection}/{args.layout}"
    done = budget_curve.main([*curve, "--teacher", "random"])
    results = Path(curve[curve.index("--results") + 1])
    doc = json.loads(results.read_text())
    for row in doc["rows"]:
        if row["teacher"] == "random":
            row["teacher"] = label
            row["command"] = " ".join(["python", "benchmarks/targets_teacher.py", *sys.argv[1:]])
    results.write_text(json.dumps(doc, indent=1) + "\n")
    return done


if __name__ == "__main__":
    sys.exit(main())
