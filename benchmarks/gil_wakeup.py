"""How late does another thread wake up while a GenICam camera is read?

A "victim" thread sleeps 1 ms in a loop and records how late each wake-up is: that is
what a sink thread (the PLC handshake, MQTT) suffers. Three conditions, interleaved in
one run: no acquisition; the simulated camera read the old way (Harvesters waiting
10 ms inside the producer, which holds the GIL); and read by `GenICamSource` as it is
now (no native wait, 1 ms sleeps in Python between checks). Also the CPU the reader
costs, as a share of one core.

    python benchmarks/gil_wakeup.py [--seconds 3] [--rounds 3]

Writes benchmarks/results/gil_wakeup.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def lateness_ms(seconds: float) -> list[float]:
    """Wake-up lateness of 1 ms sleeps, for `seconds`."""
    lates = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        time.sleep(0.001)
        lates.append((time.perf_counter() - t0 - 0.001) * 1e3)
    return lates


def summary(lates: list[float]) -> dict[str, float]:
    ordered = sorted(lates)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "max_ms": round(ordered[-1], 3),
        "wakeups": len(ordered),
    }


def with_reader(read: Callable[[], None], seconds: float) -> dict[str, Any]:
    stop, frames = threading.Event(), [0]

    def loop() -> None:
        while not stop.is_set():
            read()
            frames[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    time.sleep(0.3)
    cpu0, wall0 = time.process_time(), time.monotonic()
    lates = lateness_ms(seconds)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    stop.set()
    thread.join(5)
    return {**summary(lates), "frames": frames[0], "process_cpu_share": round(cpu, 3)}


def main() -> int:
    from edge_sdk.sources.errors import FrameTimeoutError
    from edge_sdk.sources.genicam import GenICamSource
    from edge_sdk.sources.profiles import CameraProfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per condition and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "gil_wakeup.json")
    args = parser.parse_args()

    profile = CameraProfile.model_validate(
        {"pixel_format": "Mono8", "width": 640, "height": 480, "frame_rate_hz": 10}
    )
    rows: dict[str, list[dict[str, Any]]] = {"idle": [], "native_wait_10ms": [], "now": []}
    with GenICamSource("0", profile=profile) as camera:
        acquirer = camera._acquirer  # the old way needs the raw acquirer

        def old_read() -> None:
            acquirer.timeout_period_on_update_event_data_call = 10
            buffer = acquirer.try_fetch(timeout=0.1)
            if buffer is not None:
                buffer.queue()

        def new_read() -> None:
            acquirer.timeout_period_on_update_event_data_call = 0
            with contextlib.suppress(FrameTimeoutError):  # nothing came within 0.1 s
                camera.read(timeout_s=0.1)

        for _ in range(args.rounds):
            cpu0, wall0 = time.process_time(), time.monotonic()
            idle = summary(lateness_ms(args.seconds))
            share = (time.process_time() - cpu0) / (time.monotonic() - wall0)
            rows["idle"].append({**idle, "frames": 0, "process_cpu_share": round(share, 3)})
            rows["native_wait_10ms"].append(with_reader(old_read, args.seconds))
            rows["now"].append(with_reader(new_read, args.seconds))

    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in rows.items()
    }
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.rounds} rounds")
    print(f"{'condition':<18} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'frames':>7} {'cpu':>6}")
    for name, m in medians.items():
        print(
            f"{name:<18} {m['p50_ms']:>7.3f} {m['p99_ms']:>7.3f} {m['max_ms']:>7.2f} "
            f"{m['frames']:>7.0f} {m['process_cpu_share']:>6.2f}"
        )
    ratio = medians["native_wait_10ms"]["p50_ms"] / max(medians["now"]["p50_ms"], 1e-6)
    print(f"median lateness, old / now: {ratio:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": "python benchmarks/gil_wakeup.py",
                "cpu": platform.processor() or platform.machine(),
                "load_average": load,
                "rounds": rows,
                "medians": medians,
                "old_over_now_p50": round(ratio, 2),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
