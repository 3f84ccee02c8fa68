"""Does a closed-form read-out make an under-distilled teacher better? (Measured: no.)

The teacher PDN's last convolution is linear in its trunk's output, so the best read-out for
the trunk as it is can be solved for instead of learnt: ridge regression of the distillation
targets on the trunk's 4x4 windows (4,096 inputs and a bias, 384 outputs) over photo windows
drawn as ``edge-ad pretrain-teacher`` draws them (every second grid point of each, the
parity shifted per batch), the ridge weight chosen by the loss on other windows. The teacher
with the refitted read-out is written beside its record of the fit; score it with
``benchmarks/feature_knn.py --features teacher:FILE --standardise``.

    python benchmarks/teacher_readout.py --out runs/refit/teacher_small_lite0.pth \\
        --batches 80 --val-batches 8

On the shipped teacher (session 18, AMD EPYC, 2 cores) the held-out loss fell only from 0.760
to 0.737, and the proxy went down on magnetic tile (models/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from edge_sdk.training import networks as nets
from edge_sdk.training.backbones import load_backbone
from edge_sdk.training.data import step_rng
from edge_sdk.training.inference_graph import normalise
from edge_sdk.training.teacher import TeacherConfig, pdn_crop, projection_windows
from edge_sdk.training.teacher_file import write_teacher
from edge_sdk.training.teacher_photos import Photos
from edge_sdk.training.teacher_targets import WINDOW, fit_projection, targets

_DRAWS = 12345  # a seed apart from every distillation's draws
FIT_STEP, VAL_STEP = 1_000_000, 2_000_000
GRID = 56


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="models/teacher_small_lite0.pth")
    p.add_argument("--photos", default="../shared/data/natural")
    p.add_argument("--projection", default="pca", choices=["pca", "pca-rotated"])
    p.add_argument("--batches", type=int, default=80, help="batches of photo windows to fit on")
    p.add_argument("--val-batches", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lambdas", default="1e-4,1e-3,1e-2,1e-1,1", help="ridge weights to try")
    p.add_argument("--out", required=True, help="the refitted teacher .pth to write")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    photos = Photos(a.photos)
    config = TeacherConfig(photos=Path(a.photos), out=Path(a.out), projection=a.projection)
    backbone = load_backbone("lite0", image_size=WINDOW).eval()
    projection = fit_projection(
        backbone, projection_windows(photos, config), seed=0, kind=a.projection
    )
    pdn = nets.teacher("efficientad-s")
    nets.load_teacher_weights(pdn, a.teacher)
    pdn = pdn.float().eval()
    trunk, head = pdn[:8], pdn[8]

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        window = photos.draw(step_rng(_DRAWS, step), a.batch)
        with torch.no_grad():
            return trunk(normalise(pdn_crop(window) * 255.0)), targets(backbone, projection, window)

    inputs = head.in_channels * 16 + 1
    xtx = torch.zeros(inputs, inputs, dtype=torch.float64)
    xty = torch.zeros(inputs, nets.TEACHER_CHANNELS, dtype=torch.float64)
    rows, started = 0, time.perf_counter()
    for b in range(a.batches):
        h, y = batch(FIT_STEP + b)
        with torch.no_grad():
            grid = torch.arange(GRID * GRID).view(GRID, GRID)
            idx = grid[b % 2 :: 2, (b // 2) % 2 :: 2].reshape(-1)
            x = F.unfold(h, 4)[:, :, idx].permute(0, 2, 1).reshape(-1, inputs - 1)
            x = torch.cat([x, torch.ones(len(x), 1)], 1)
            yy = y.flatten(2)[:, :, idx].permute(0, 2, 1).reshape(-1, nets.TEACHER_CHANNELS)
            xtx += (x.T @ x).double()
            xty += (x.T @ yy).double()
            rows += len(x)
        if b % 10 == 0:
            print(f"batch {b} rows {rows} {time.perf_counter() - started:.0f}s", flush=True)
    held_out = [batch(VAL_STEP + b) for b in range(a.val_batches)]

    def loss(read_out: torch.nn.Module) -> float:
        with torch.no_grad():
            return sum(float(F.mse_loss(read_out(h), y)) for h, y in held_out) / len(held_out)

    result: dict[str, object] = {
        "command": "python benchmarks/teacher_readout.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "teacher": a.teacher,
        "projection": a.projection,
        "rows": rows,
        "fit_images": a.batches * a.batch,
        "val_mse_before": loss(head),
    }
    scale = xtx.diagonal()[:-1].mean()
    best: tuple[float, float, torch.nn.Conv2d] | None = None
    for lam in map(float, a.lambdas.split(",")):
        ridge = xtx.clone()
        ridge.diagonal()[:-1] += lam * scale
        w = torch.linalg.solve(ridge, xty)
        conv = torch.nn.Conv2d(head.in_channels, nets.TEACHER_CHANNELS, 4)
        conv.weight.data = w[:-1].T.reshape(conv.weight.shape).float()
        conv.bias.data = w[-1].float()
        result[f"val_mse_lambda_{lam:g}"] = value = loss(conv)
        print(f"lambda {lam:g} held-out loss {value:.4f}", flush=True)
        if best is None or value < best[0]:
            best = (value, lam, conv)
    assert best is not None
    result["lambda"], result["val_mse_after"] = best[1], best[0]
    pdn[8] = best[2]
    write_teacher(pdn, a.out, {"experiment": "read-out refit", **result})
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
