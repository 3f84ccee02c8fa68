"""Latency per part of a tiled bundle against the same graph untiled, on one camera frame.

The same float32 graph is written twice: as it is (the frame squeezed into one 256 px
input) and with `model.input.tiling` at each scale asked for (the whole frame, 256 px tiles,
32 px overlap). Rounds are interleaved across the bundles, so load from elsewhere hits all
alike; each row gives the tiles a part needs, the median and p90 per part and the ratio to
the untiled bundle, with the load average before and after.

    python benchmarks/tiled_latency.py                        # random-weight EfficientAD-S
    python benchmarks/tiled_latency.py --bundle B --frame 2448x2048 --scales 0.25,0.5,1
    python benchmarks/tiled_latency.py --int8 --threads 1   # and each bundle's int8 variant

With ``--int8`` each bundle also gets its int8 variant (calibrated on tiles of the frame;
the random frame is not a part, so its parity is not a result) timed without the float32
recheck.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def tiled_copy(bundle: Path, out: Path, scale: float) -> Path:
    """``bundle`` with the whole frame tiled at ``scale``: the same graph, byte for byte."""
    from edge_sdk.runtime.bundle import Bundle, write_bundle
    from edge_sdk.runtime.tiling import TileGrid, Tiling

    source = Bundle.open(bundle)
    manifest = source.manifest
    spec = manifest.model.input.model_copy(update={"tiling": Tiling(grid=TileGrid(scale=scale))})
    model = manifest.model.model_copy(update={"input": spec, "variants": {}})
    tiled = manifest.model_copy(update={"model": model, "name": f"{manifest.name}-x{scale:g}"})
    return write_bundle(out, tiled, {manifest.model.file: source.graph("fp32")})


def main() -> int:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from inspector_overhead import random_bundle

    from edge_sdk.runtime.inspector import Inspector
    from edge_sdk.runtime.tiling import plan_regions
    from edge_sdk.tools.cpu_units import cpu_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a bundle (default: random-weight EfficientAD-S)")
    parser.add_argument("--frame", default="2448x2048", help="WIDTHxHEIGHT, mono8")
    parser.add_argument("--scales", default="0.25,0.5")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--int8", action="store_true", help="time int8 variants too")
    parser.add_argument("--out", default=str(RESULTS / "tiled_latency.json"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.frame.lower().split("x"))
    frame = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = Path(args.bundle) if args.bundle else random_bundle(folder, "efficientad-s")
        bundles = {"untiled": base}
        for scale in (float(s) for s in args.scales.split(",")):
            bundles[f"tiled x{scale:g}"] = tiled_copy(base, folder / f"t{scale:g}.bundle", scale)
        inspectors = {
            name: Inspector.open(path, device="cpu", variant="fp32", threads=args.threads)
            for name, path in bundles.items()
        }
        if args.int8:
            from edge_sdk.runtime.variants import add_variant

            for name, path in bundles.items():
                out = folder / f"{path.stem}.int8.bundle"
                add_variant(path, out, kind="int8", good=[frame, frame[::-1]], allow_flips=True)
                inspectors[f"{name} int8"] = Inspector.open(
                    out, device="cpu", variant="int8", threads=args.threads, recheck=False
                )
        for inspector in inspectors.values():
            inspector.inspect(frame)  # warm-up: every batch size the frame needs
        times: dict[str, list[float]] = {name: [] for name in inspectors}
        for _ in range(args.rounds):
            for name, inspector in inspectors.items():
                t0 = time.perf_counter()
                result = inspector.inspect(frame)
                times[name].append((time.perf_counter() - t0) * 1e3)
                assert result.error is None, result.error
        rows = []
        base_ms = statistics.median(times["untiled"])
        for name, inspector in inspectors.items():
            tiling = inspector.manifest.model.input.tiling
            tiles = 1 if tiling is None else len(plan_regions(tiling, frame.shape)[0].tiles)
            ms = times[name]
            rows.append(
                {
                    "bundle": name,
                    "tiles_per_part": tiles,
                    "median_ms": round(statistics.median(ms), 1),
                    "p90_ms": round(float(np.percentile(ms, 90)), 1),
                    "x_untiled": round(statistics.median(ms) / base_ms, 2),
                    "ms_per_tile": round(statistics.median(ms) / tiles, 1),
                }
            )
    cpu = cpu_info()
    report = {
        "what": "Inspector.inspect per part, float32 graph (and its int8 variant with --int8), "
        "the same graph tiled and untiled, interleaved rounds",
        "frame": f"{width}x{height} mono8",
        "rounds": args.rounds,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "cpu": None if cpu is None else cpu.record(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "rows": rows,
    }
    for row in rows:
        print(
            f"{row['bundle']:<19} {row['tiles_per_part']:>4} tiles  {row['median_ms']:>8.1f} ms "
            f"(p90 {row['p90_ms']:.1f})  x{row['x_untiled']:.2f} untiled  "
            f"{row['ms_per_tile']:.1f} ms/tile"
        )
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
