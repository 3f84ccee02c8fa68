"""What a training budget buys: image AUROC, AU-PRO and the rates at the threshold after
N student steps, for each data set and teacher, from one run per set and teacher.

Each (set, teacher) pair trains once to the largest step count; the models at the smaller
ones are forks of that run, weight for weight those of separate runs
(:mod:`edge_sdk.training.milestones`). Each model is exported and calibrated as
`edge-ad train` would, then evaluated in float32 on the set's test split. Rows are written
to the results file as they come, so an interrupted run keeps what it measured.

Each run checkpoints to ``OUT/<set>_<teacher>.ckpt`` every ``--checkpoint-every`` steps.
The same command with ``--resume`` continues every run from there and keeps the rows
already in the results file: 10,000 steps take about 15 hours on a 2-core CPU without
AMX, more than one working session.

Several starts may share one ``--out`` and one results file, e.g. one process per set to
use every core: each row is merged into the file under a lock, and each row names the
command, processor and threads that made it.

    python benchmarks/budget_curve.py --data ../shared/data/magnetic_tile \\
        --data ../shared/data/kolektorsdd --teacher default --teacher random \\
        --penalty ../shared/data/natural --milestones 1000,3000,10000 --out runs/budget

`--teacher` is `default` (the shipped teacher), `random`, or a teacher file; give it once
for each teacher to compare. Settings not named here are `edge-ad train`'s defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import edge_sdk.training  # noqa: F401  (first, so its OpenMP wait policy precedes torch)

RESULTS = Path(__file__).resolve().parent / "results"
WHAT = (
    "EfficientAD student after N steps, models forked from one run per set and teacher "
    "(edge_sdk.training.milestones), calibrated as edge-ad train does, evaluated in float32 "
    "on the test split"
)


def _key(row: dict[str, Any]) -> tuple[str, str, int, str]:
    # The device names the precision too: a bfloat16 row stands beside a float32 one.
    return (row["data"], row["teacher"], row["steps"], row.get("device", ""))


def read_rows(results: Path) -> list[dict[str, Any]]:
    return list(json.loads(results.read_text())["rows"]) if results.exists() else []


def write_row(results: Path, row: dict[str, Any], *, resumed: str | None = None) -> None:
    """Merge one row into the results file, keeping the rows other starts wrote there.

    A row measured again (the model came again after an interruption) replaces the old one.
    """
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results.with_name(results.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        doc = json.loads(results.read_text()) if results.exists() else {}
        rows = [r for r in doc.get("rows", []) if _key(r) != _key(row)]
        doc["what"] = WHAT
        doc["rows"] = sorted([*rows, row], key=_key)
        if resumed is not None:
            doc["resumed"] = sorted({*doc.get("resumed", []), resumed})
        partial = results.with_name(results.name + ".partial")
        partial.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(partial, results)  # a reader never sees half a file


def _row(report: dict[str, Any]) -> dict[str, Any]:
    at = report["at_threshold"]
    return {
        "image_auroc": report["image"]["auroc"],
        "pixel_auroc": report["pixel"].get("auroc"),
        "au_pro": report["pixel"].get("au_pro"),
        "threshold": at.get("threshold"),
        "false_rejects": at["false_rejects"],
        "escapes": at.get("escapes"),
        "target": at.get("target"),
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    from edge_sdk.evaluation.report import evaluate_bundle
    from edge_sdk.training.checkpoint import checkpoint_path
    from edge_sdk.training.milestones import fit_milestones
    from edge_sdk.training.recipe import TrainConfig, resolve_device
    from edge_sdk.training.teacher_file import hardware
    from edge_sdk.training.train import export_fit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, action="append", help="MVTec-style set")
    parser.add_argument("--teacher", action="append", help="default | random | FILE")
    parser.add_argument("--penalty", help="generic photos for the penalty term")
    parser.add_argument("--milestones", default="1000,3000,10000", help="step counts")
    parser.add_argument("--model", choices=["s", "m"], default="s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, help="Adam's learning rate (default: train's)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--eval-threads", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for the bundles and reports")
    parser.add_argument("--results", default=str(RESULTS / "budget_curve.json"))
    parser.add_argument("--checkpoint-every", type=int, default=100, metavar="STEPS")
    parser.add_argument(
        "--resume", action="store_true", help="continue the runs and rows of an earlier start"
    )
    args = parser.parse_args(argv)
    # Hours of training: say where each run stands (a line per checkpoint).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    milestones = sorted({int(m) for m in args.milestones.split(",")})
    out = Path(args.out).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    results = Path(args.results)
    teachers = args.teacher or ["default"]
    labels = {t: Path(t).stem if t not in ("default", "random") else t for t in teachers}
    runs = [f"{Path(d).name}_{labels[t]}" for d in args.data for t in teachers]
    earlier = [r for r in runs if checkpoint_path(out / f"{r}.ckpt").exists()]
    if earlier and not args.resume:
        parser.error(
            f"{out} holds checkpoints of an earlier start of {', '.join(earlier)}: pass "
            "--resume to continue them, or choose another --out"
        )
    made_by = {
        "command": "python benchmarks/budget_curve.py " + " ".join(sys.argv[1:]),
        "hardware": hardware(resolve_device(args.device)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    resumed = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()) if args.resume else None
    for data in args.data:
        for teacher in teachers:
            label = labels[teacher]
            config = TrainConfig(
                data=Path(data),
                out=out / "unused.bundle",
                architecture=f"efficientad-{args.model}",
                teacher=None if teacher == "default" else teacher,
                penalty=Path(args.penalty) if args.penalty else None,
                seed=args.seed,
                device=args.device,
            )
            if args.lr is not None:
                config = dataclasses.replace(config, lr=args.lr)
            run_name = f"{Path(data).name}_{label}"
            measured = {
                r["steps"]
                for r in read_rows(results)
                if (r["data"], r["teacher"]) == (Path(data).name, label)
            }
            if measured >= set(milestones):
                continue  # finished at an earlier start
            started = time.perf_counter()
            run = fit_milestones(
                config,
                milestones,
                checkpoint=checkpoint_path(out / f"{run_name}.ckpt"),
                checkpoint_every=args.checkpoint_every,
            )
            for model in run:
                name = f"{run_name}_{model.steps}"
                bundle = out / f"{name}.bundle"
                at_steps = dataclasses.replace(
                    config, out=bundle, steps=model.steps, overwrite=True
                )
                export_fit(at_steps, model)
                report = evaluate_bundle(
                    bundle,
                    data,
                    out_dir=out / f"{name}.eval",
                    device="cpu",
                    variant="fp32",
                    threads=args.eval_threads,
                )
                row = {
                    "data": Path(data).name,
                    "teacher": label,
                    "steps": model.steps,
                    "train_wall_s": round(model.wall_time_s, 1),
                    "since_start_s": round(time.perf_counter() - started, 1),
                    "device": model.device,
                    **_row(report),
                    **made_by,
                    "load_average": os.getloadavg(),
                }
                write_row(results, row, resumed=resumed)
                print(
                    f"{row['data']:>16} {label:>12} {model.steps:>6} steps: image AUROC "
                    f"{row['image_auroc']:.3f}, AU-PRO {row['au_pro'] or float('nan'):.3f}, "
                    f"escapes {(row['escapes'] or {}).get('rate', float('nan')):.3f}, "
                    f"false rejects {row['false_rejects']['rate']:.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
