"""How long a training step takes here, the project's step against the reference's, and
whether the faster one learns the same.

Student (EfficientAD-S, batch 1, penalty on): two runs with the same seed and data, one
stepping with :func:`edge_sdk.training.reference_step.reference_train_step` (the teacher
on the image and its jittered copy every step, three full student passes), one with
``Trainer.train_step`` (cached teacher output, one student pass, half the last
convolution per input, fused Adam). Their steps are interleaved, so both see the same
machine, and both record their losses: the curves must agree. Also timed: the reference step in
float32, what ``edge-ad train`` ran by default before bfloat16 became the default on CPUs
that run it natively.

Teacher (PDN-S distillation, batch 8): the step of ``edge-ad pretrain-teacher`` in
bfloat16, in parts (photos, backbone + targets, PDN forward and backward).

Every step's floating-point work is counted (torch's FlopCounterMode) and set against
the machine's bfloat16 and float32 matmul rates measured in the same run: the floor a
step cannot beat on this CPU, whatever the code.

    python benchmarks/train_step.py --data ../shared/data/magnetic_tile \\
        --photos ../shared/data/natural --steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import edge_sdk.training  # noqa: F401  (first, so its OpenMP wait policy precedes torch)

RESULTS = Path(__file__).resolve().parent / "results"
CPU_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def cpu_record() -> dict[str, Any]:
    """The CPU's name, the flags that decide its matmul units, and the load average."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"name": name, "cores": os.cpu_count(), "flags": [f for f in CPU_FLAGS if f in flags]}


def matmul_rate(dtype: Any, size: int = 3072, rounds: int = 3) -> float:
    """GFLOP/s of a square matmul in ``dtype``: the best rate the CPU's kernels reach."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def count_flops(fn: Callable[[], Any]) -> float:
    """Floating-point operations of one call (matmuls and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def student_runs(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from edge_sdk.training.recipe import TrainConfig
    from edge_sdk.training.reference_step import reference_train_step
    from edge_sdk.training.trainer import Trainer

    config = TrainConfig(
        data=Path(args.data),
        out=Path("unused.bundle"),
        steps=max(args.steps, 2),
        penalty=Path(args.photos),
        device="cpu",
    )
    # The reference code's plain Adam; the project's step runs the same update fused.
    reference = Trainer(config, torch.device("cpu"), fused_adam=False)
    reference.measure_teacher(None)
    current = Trainer(config, torch.device("cpu"))
    current.measure_teacher(None)  # also fills its teacher cache, as a training run does
    mean = reference.teacher_mean.view(1, -1, 1, 1)
    std = reference.teacher_std.view(1, -1, 1, 1)
    steps: dict[str, Callable[[], dict[str, float]]] = {
        "reference": lambda: reference_train_step(reference, mean, std),
        "edge-ad": lambda: current.train_step(mean, std),
    }
    owners = {"reference": reference, "edge-ad": current}
    times: dict[str, list[float]] = {k: [] for k in steps}
    losses: dict[str, list[float]] = {k: [] for k in steps}
    for step in range(args.steps):
        for name, fn in steps.items():
            run = owners[name]
            t0 = time.perf_counter()
            values = fn()
            run.update()
            times[name].append(time.perf_counter() - t0)
            run.step += 1
            losses[name].append(values["total"])
        if step % 20 == 0:
            print(
                f"student step {step}: reference {times['reference'][-1]:.3f} s, "
                f"edge-ad {times['edge-ad'][-1]:.3f} s",
                file=sys.stderr,
            )
    flops = {name: count_flops(fn) for name, fn in steps.items()}
    # What `edge-ad train` ran by default before: the reference step in float32.
    fp32 = Trainer(dataclasses.replace(config, bf16=False), torch.device("cpu"), fused_adam=False)
    fp32_times = []
    for _ in range(args.fp32_steps):
        t0 = time.perf_counter()
        reference_train_step(fp32, mean, std)
        fp32.update()
        fp32_times.append(time.perf_counter() - t0)
        fp32.step += 1
    skip = min(3, args.steps - 1)  # first steps warm the kernels up
    return {
        "precision": current.precision.label,
        "median_s": {k: statistics.median(v[skip:]) for k, v in times.items()}
        | {"reference fp32 (the old default)": statistics.median(fp32_times[1:] or fp32_times)},
        "gflop": {k: v / 1e9 for k, v in flops.items()},
        "loss_curves": {k: _windows(v, 20) for k, v in losses.items()},
        "largest_relative_loss_difference": max(
            abs(a - b) / max(abs(a), 1e-9)
            for a, b in zip(losses["reference"], losses["edge-ad"], strict=True)
        ),
    }


def teacher_runs(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from edge_sdk.training import networks as nets
    from edge_sdk.training.backbones import load_backbone
    from edge_sdk.training.data import step_rng
    from edge_sdk.training.recipe import adam, precision_for
    from edge_sdk.training.teacher import Photos, distillation_loss, pdn_crop
    from edge_sdk.training.teacher_targets import WINDOW, fit_projection, targets

    photos = Photos(args.photos)
    backbone = load_backbone("lite0", image_size=WINDOW)
    rng = np.random.default_rng(0)
    projection = fit_projection(backbone, [photos.draw(rng, 16) for _ in range(2)], seed=0)
    pdn = nets.teacher("efficientad-s").to(memory_format=torch.channels_last)
    optimizer = adam(pdn.parameters(), 1e-4)
    plain = adam(pdn.parameters(), 1e-4, fused=False)  # what pretrain-teacher ran before
    dtype = precision_for(torch.device("cpu"), None).autocast_dtype
    batch = args.teacher_batch
    window = photos.draw(step_rng(0, 0), batch)

    def full(optimizer: torch.optim.Optimizer = optimizer) -> None:
        loss = distillation_loss(pdn, backbone, projection, window, autocast_dtype=dtype)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def pdn_only() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = pdn(pdn_crop(window).contiguous(memory_format=torch.channels_last))
        optimizer.zero_grad(set_to_none=True)
        out.float().square().mean().backward()
        optimizer.step()

    parts: dict[str, Callable[[], Any]] = {
        "photos": lambda: photos.draw(step_rng(0, 1), batch),
        "backbone + targets": lambda: targets(backbone, projection, window),
        "pdn forward + backward": pdn_only,
        "step": full,
        "step, plain Adam (before)": lambda: full(plain),
    }
    times: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(args.teacher_rounds):
        for name, fn in parts.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {
        "batch": batch,
        "precision": "bf16 autocast" if dtype is not None else "fp32",
        "median_s": {k: statistics.median(v[1:]) for k, v in times.items()},
        "gflop": {
            "pdn forward + backward": count_flops(pdn_only) / 1e9,
            "step": count_flops(full) / 1e9,
        },
    }


def _windows(values: list[float], size: int) -> list[float]:
    return [round(statistics.fmean(values[i : i + size]), 5) for i in range(0, len(values), size)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="good images (MVTec set or folder)")
    parser.add_argument("--photos", required=True, help="generic photos (penalty, teacher)")
    parser.add_argument("--steps", type=int, default=200, help="interleaved student steps")
    parser.add_argument("--fp32-steps", type=int, default=6)
    parser.add_argument("--teacher-batch", type=int, default=8)
    parser.add_argument("--teacher-rounds", type=int, default=4)
    parser.add_argument("--out", default=str(RESULTS / "train_step.json"))
    args = parser.parse_args()
    for folder in (args.data, args.photos):
        if not Path(folder).is_dir():
            print(f"skipped: no folder {folder}", file=sys.stderr)
            return 0
    import torch

    load_before = os.getloadavg()
    rates = {"bf16": matmul_rate(torch.bfloat16), "fp32": matmul_rate(torch.float32)}
    student = student_runs(args)
    teacher = teacher_runs(args)
    rates_after = {"bf16": matmul_rate(torch.bfloat16), "fp32": matmul_rate(torch.float32)}
    peak = {k: max(rates[k], rates_after[k]) for k in rates}
    key = "bf16" if "bf16" in student["precision"] else "fp32"
    student["floor_s"] = {k: v / peak[key] for k, v in student["gflop"].items()}
    teacher["floor_s"] = {k: v / peak[key] for k, v in teacher["gflop"].items()}
    report = {
        "cpu": cpu_record(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "matmul_gflop_s": {"before": rates, "after": rates_after},
        "student": student,
        "teacher": teacher,
        "command": " ".join(["python", "benchmarks/train_step.py", *sys.argv[1:]]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    return 0


def format_report(r: dict[str, Any]) -> str:
    s, t = r["student"], r["teacher"]
    ref, new = s["median_s"]["reference"], s["median_s"]["edge-ad"]
    lines = [
        f"{r['cpu']['name']} ({', '.join(r['cpu']['flags'])}), {r['threads']} threads, "
        f"load {r['load_average']['before'][0]:.2f} -> {r['load_average']['after'][0]:.2f}",
        f"matmul peak: bf16 {r['matmul_gflop_s']['before']['bf16']:.0f} GFLOP/s, "
        f"fp32 {r['matmul_gflop_s']['before']['fp32']:.0f} GFLOP/s",
        f"student step, EfficientAD-S batch 1 ({s['precision']}), median of interleaved steps:",
    ]
    for name, sec in s["median_s"].items():
        gflop = s["gflop"].get(name)
        extra = f", {gflop:.0f} GFLOP, floor {s['floor_s'][name]:.3f} s" if gflop else ""
        lines.append(f"  {name:36s} {sec:.3f} s{extra}")
    lines.append(f"  speed-up over the reference step: x{ref / new:.2f}")
    lines.append(
        f"  losses agree within {100 * s['largest_relative_loss_difference']:.3f} % over "
        f"{len(s['loss_curves']['reference']) * 20} steps"
    )
    lines.append(f"teacher distillation step, PDN-S batch {t['batch']} ({t['precision']}):")
    for name, sec in t["median_s"].items():
        floor = t["floor_s"].get(name)
        extra = f", floor {floor:.3f} s" if floor else ""
        lines.append(f"  {name:36s} {sec:.3f} s{extra}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
