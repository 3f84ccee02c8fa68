"""Whether ``nice`` makes a background run yield: where Linux groups processes by session
(autogroup, ``/proc/sys/kernel/sched_autogroup_enabled`` = 1), niceness orders processes
only within their session, and a run started with ``setsid`` (``nohup`` from another login,
a systemd unit) shares the CPU equally with everything else, nice 19 or not. Writing 19 to
``/proc/PID/autogroup`` lowers the whole session.

Starts ``--neighbours`` busy processes (torch matmuls, one thread each), each in its own
session at nice 19, as a long training run is usually started; then times a student pass
(PDN-S forward and backward, batch 1, 256 px, float32) here, with the neighbours' autogroups
at nice 0 and at nice 19, alternating, and prints the medians and their ratio. Results go
to benchmarks/results/background_priority.json with the load average.

    python benchmarks/background_priority.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import edge_sdk.training  # noqa: F401  (first, so its OpenMP wait policy precedes torch)

# isort: split
import torch

from edge_sdk.tools.cpu_units import cpu_info
from edge_sdk.training import networks as nets

RESULTS = Path(__file__).resolve().parent / "results"
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")
NEIGHBOUR = """
import os, torch
os.nice(19)
torch.set_num_threads(1)
a = torch.randn(1024, 1024)
while True:
    a = (a @ a).clamp_(-1, 1)
"""


def set_group_nice(pids: list[int], value: int) -> None:
    for pid in pids:
        Path(f"/proc/{pid}/autogroup").write_text(str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neighbours", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=6, help="timed passes per setting a round")
    parser.add_argument("--results", default=str(RESULTS / "background_priority.json"))
    args = parser.parse_args(argv)
    enabled = AUTOGROUP.read_text().strip() == "1" if AUTOGROUP.exists() else False
    neighbours = [
        subprocess.Popen(
            [sys.executable, "-c", NEIGHBOUR],
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for _ in range(args.neighbours)
    ]
    pids = [p.pid for p in neighbours]
    student, image = nets.student("efficientad-s"), torch.randn(1, 3, 256, 256)
    times: dict[int, list[float]] = {0: [], 19: []}
    try:
        time.sleep(2)  # the neighbours load torch
        student(image).square().mean().backward()  # warm-up: oneDNN picks its kernels
        for _ in range(args.rounds):
            for value in (0, 19):
                try:
                    set_group_nice(pids, value)
                except OSError as exc:  # raising a group's priority back needs CAP_SYS_NICE
                    print(f"cannot set the neighbours' autogroup: {exc}", file=sys.stderr)
                    return 1
                time.sleep(1)
                for _ in range(args.passes):
                    started = time.perf_counter()
                    student(image).square().mean().backward()
                    times[value].append(time.perf_counter() - started)
    finally:
        for p in neighbours:
            p.kill()
            p.wait()
    medians = {value: statistics.median(v) for value, v in times.items()}
    report = {
        "what": " ".join(__doc__.split("\n\n")[0].split()),
        "command": "python benchmarks/background_priority.py " + " ".join(sys.argv[1:]),
        "cpu": cpu.model if (cpu := cpu_info()) is not None else platform.machine(),
        "cores": os.cpu_count(),
        "autogroup_enabled": enabled,
        "neighbours": args.neighbours,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "student_pass_median_s": {
            "neighbours' autogroup at nice 0": medians[0],
            "neighbours' autogroup at nice 19": medians[19],
        },
        "ratio": medians[0] / medians[19],
        "passes_each": len(times[0]),
    }
    Path(args.results).write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"autogroup {'on' if enabled else 'off'}, {args.neighbours} nice-19 neighbours in their "
        f"own sessions: student pass {medians[0]:.3f} s with their autogroups at nice 0, "
        f"{medians[19]:.3f} s at nice 19 (x{report['ratio']:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
