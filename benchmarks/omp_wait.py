"""Training's threads on a shared machine: OpenMP's waiting threads spinning (GNU OpenMP's
default) against sleeping (``OMP_WAIT_POLICY=PASSIVE``, what ``edge_sdk.training`` sets).

Each case runs in a fresh process, since OpenMP reads the policy once, when torch loads:
the teacher projection's eigendecomposition (float64, 1,584 dimensions, as
``edge-ad pretrain-teacher`` fits it) and a student forward and backward pass (PDN-S, batch
1, 256 px, float32), with torch's default threads. The cases alternate, so machine noise
hits both policies alike. Prints medians and the ratio of spinning to sleeping, and adds
them under ``--label`` to benchmarks/results/omp_wait.json with the load average.

Run it on the machine as it is, once idle and once beside what shares it (another training
run, a line). A spinning process at the lowest priority did not slow spinning threads
here; a training run beside them did:

    python benchmarks/omp_wait.py --label idle
    python benchmarks/omp_wait.py --label "beside a training run" --note "..."
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from edge_sdk.tools.cpu_units import cpu_info

RESULTS = Path(__file__).resolve().parent / "results"
# Spinning is GNU OpenMP's default; named, since edge_sdk.training sets PASSIVE otherwise.
POLICIES = {"spin (default)": "ACTIVE", "sleep (PASSIVE)": "PASSIVE"}

CHILD = """
import json, time, torch
from edge_sdk.training import networks as nets
torch.manual_seed(0)
x = torch.randn(3168, 1584, dtype=torch.float64)
c = x.T @ x
student, image = nets.student("efficientad-s"), torch.randn(1, 3, 256, 256)
student(image).square().mean().backward()  # warm-up: oneDNN's kernels are chosen here
t = time.perf_counter(); torch.linalg.eigh(c); eigh = time.perf_counter() - t
t = time.perf_counter(); student(image).square().mean().backward(); step = time.perf_counter() - t
print(json.dumps({"eigh_s": eigh, "student_pass_s": step, "threads": torch.get_num_threads()}))
"""


def run_child(policy: str) -> dict[str, float]:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", required=True, help="what else the machine was doing")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default=str(RESULTS / "omp_wait.json"))
    args = parser.parse_args(argv)
    cpu = cpu_info()

    before = os.getloadavg()
    times: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for name, policy in POLICIES.items():
            got = run_child(policy)
            for key in ("eigh_s", "student_pass_s"):
                times.setdefault(name, {}).setdefault(key, []).append(got[key])
    medians = {
        name: {k: statistics.median(v) for k, v in case.items()} for name, case in times.items()
    }
    spin, sleep = POLICIES
    print(f"{args.label}: median of {args.rounds}, load average {before[0]:.2f}")
    print(f"{'what':16} {spin:>16} {sleep:>16} {'spin/sleep':>10}")
    ratios: dict[str, float] = {}
    for key in ("eigh_s", "student_pass_s"):
        a, b = medians[spin][key], medians[sleep][key]
        ratios[key] = a / b
        print(f"{key:16} {a:15.2f}s {b:15.2f}s {a / b:10.2f}")
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update(
        {
            "what": " ".join(__doc__.split("\n\n")[0].split()),
            "machine": {
                "cpu": cpu.model if cpu else platform.machine(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
            },
        }
    )
    result.setdefault("runs", {})[args.label] = {
        "command": "python benchmarks/omp_wait.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "note": args.note,
        "rounds": args.rounds,
        "load_average": {"before": before, "after": os.getloadavg()},
        "median_s": medians,
        "spin_over_sleep": ratios,
        "all_s": times,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
