"""What GenICamSource adds per frame over the producer's own fetch.

Interleaves, frame by frame on the same acquirer, (a) Harvesters' bare
``with acquirer.fetch(...) as buffer: pass`` and (b) ``GenICamSource.read()``, which also
decodes the frame with its one copy into pipeline-owned memory and builds the `Frame`.
Before each timed call a frame is made ready (software trigger, then a wait), so neither
side measures waiting for the camera. Prints medians, p90 and the overhead; also times a
bare ``numpy.copy`` of a frame, the floor for any source that owns its pixels.

    python benchmarks/camera_overhead.py                      # TLSimu 2448x2048 Mono8
    python benchmarks/camera_overhead.py --producer /path/TLSimu.cti --size 4096x4096
    python benchmarks/camera_overhead.py --viky               # viky.cti, 800x800 Mono8

TLSimu.cti (with libVirtualFG.so beside it) comes from the genicam==1.5.0 wheel; the
tests cache it in .pytest_cache/d/tlsimu, which is the default place looked in.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def tlsimu_path(given: str | None) -> Path | None:
    candidates = [given, os.environ.get("EDGE_AD_TLSIMU"), REPO / ".pytest_cache/d/tlsimu"]
    for c in candidates:
        if not c:
            continue
        path = Path(c)
        path = path / "TLSimu.cti" if path.is_dir() else path
        if path.is_file():
            return path
    return None


def stats_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 4),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e3, 4),
        "min_ms": round(ordered[0] * 1e3, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--producer", help="TLSimu.cti (or its folder)")
    parser.add_argument("--viky", action="store_true", help="use viky.cti instead of TLSimu")
    parser.add_argument("--size", default="2448x2048", help="WxH (TLSimu; viky max 800x800)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    # The bare fetches take frames the source never sees; its lost-frame warnings are noise.
    logging.getLogger("edge_sdk.sources.genicam").setLevel(logging.ERROR)

    from edge_sdk.sources import CameraProfile, GenICamSource

    width, height = (int(v) for v in args.size.lower().split("x"))
    cti = None if args.viky else tlsimu_path(args.producer)
    if cti is None:
        if not args.viky:
            print("TLSimu.cti not found (run the tests once, or --producer); using viky.cti")
        width, height = min(width, 800), min(height, 800)
        profile = CameraProfile(
            pixel_format="Mono8",
            width=width,
            height=height,
            frame_rate_hz=200,
            buffer_handling="oldest_first",
            num_buffers=4,
        )
        source = GenICamSource("0", profile=profile, camera_id="bench")
        settle_s = 0.012  # more than a 200 Hz frame period: a frame is queued
        producer = "viky.cti (free run 200 Hz, oldest-first)"
    else:
        profile = CameraProfile.model_validate(
            {
                "pixel_format": "Mono8",
                "width": width,
                "height": height,
                "trigger": {"mode": "software"},
            }
        )
        source = GenICamSource(
            "serial:SN_InterfaceA_0",
            profile=profile,
            camera_id="bench",
            producer_paths=[cti],
            include_simulator=False,
        )
        settle_s = 0.03  # TLSimu needs about 6 ms from trigger to frame at 512x512
        producer = f"{cti.name} (software trigger)"

    bare: list[float] = []
    ours: list[float] = []
    with source:
        acquirer: Any = source._acquirer  # the same buffers and producer for both sides
        triggered = profile.trigger.mode == "software"

        def ready() -> None:
            if triggered:
                source.trigger()
            time.sleep(settle_s)

        for _ in range(5):  # warm-up: buffers touched, caches and allocator settled
            ready()
            source.read(timeout_s=5)
        for _ in range(args.rounds):
            ready()
            start = time.perf_counter()
            with acquirer.fetch(timeout=5.0):
                pass
            bare.append(time.perf_counter() - start)
            ready()
            start = time.perf_counter()
            frame = source.read(timeout_s=5)
            ours.append(time.perf_counter() - start)
        assert frame.image.shape == (height, width)
        lost = source.stats.lost
    image = np.empty((height, width), np.uint8)
    copies = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        np.copy(image)
        copies.append(time.perf_counter() - start)

    result = {
        "producer": producer,
        "frame": f"{width}x{height} Mono8",
        "rounds": args.rounds,
        "harvesters_fetch": stats_ms(bare),
        "genicam_source_read": stats_ms(ours),
        "overhead_median_ms": round((statistics.median(ours) - statistics.median(bare)) * 1e3, 4),
        "numpy_copy_of_a_frame": stats_ms(copies),
        "lost_frames": lost,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['frame']} from {producer}, {args.rounds} interleaved rounds")
    for key in ("harvesters_fetch", "genicam_source_read", "numpy_copy_of_a_frame"):
        s = result[key]
        print(f"  {key:24s} median {s['median_ms']:8.3f} ms  p90 {s['p90_ms']:8.3f} ms")
    print(f"  per-frame overhead over the producer's fetch: {result['overhead_median_ms']:.3f} ms")


if __name__ == "__main__":
    main()
