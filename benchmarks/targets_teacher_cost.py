"""What the targets teacher costs at inference: the inference graph with the PDN-S teacher
and with :mod:`targets_teacher`'s (Lite0 in the graph), through ONNX Runtime on the CPU.

Both graphs are exported as ``edge-ad train`` exports them (the targets one at opset 18, see
``targets_teacher.py``) with the same student and autoencoder, then run in interleaved rounds
on one 256x256 uint8 image, batch 1, so both see the same machine; medians and their ratio.

    python benchmarks/targets_teacher_cost.py --photos ../shared/data/natural --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from targets_teacher import targets_teacher

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    from edge_sdk.training import networks as nets
    from edge_sdk.training.inference_graph import InferenceGraph
    from edge_sdk.training.onnx_export import export_onnx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--layout", default="mean", choices=("points", "mean"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", default=str(RESULTS / "targets_teacher_cost.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    student, autoencoder = nets.student("efficientad-s"), nets.autoencoder()
    teachers = {
        "pdn": (nets.teacher("efficientad-s"), 17),
        "targets": (targets_teacher(args.photos, "pca-rotated", args.layout), 18),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (teacher, opset) in teachers.items():
            graph = InferenceGraph(teacher, student, autoencoder, torch.zeros(384), torch.ones(384))
            path = Path(folder) / f"{name}.onnx"
            export_onnx(graph, path, opset=opset)
            sessions[name] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
    image = np.random.default_rng(0).integers(0, 256, (1, 3, 256, 256), dtype=np.uint8)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    load_before = os.getloadavg()
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for name, session in sessions.items():
            started = time.perf_counter()
            session.run(None, {"image": image})
            times[name].append(time.perf_counter() - started)
    median = {name: 1000 * statistics.median(v[1:]) for name, v in times.items()}
    doc = {
        "what": __doc__.splitlines()[0],
        "command": " ".join(["python", "benchmarks/targets_teacher_cost.py", *sys.argv[1:]]),
        "cpu": platform.processor() or platform.machine(),
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "median_ms": median,
        "targets_over_pdn": median["targets"] / median["pdn"],
    }
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(
        f"median ms, batch 1, {args.threads} thread(s): PDN-S teacher {median['pdn']:.1f}, "
        f"targets teacher {median['targets']:.1f} (ratio {doc['targets_over_pdn']:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
