"""Frame acquired to PLC bit written, through the real line: a folder source replaying a
camera-sized frame (per-part mode, paced slower than inspection), the Inspector, and the
Modbus sink writing to pymodbus's own TCP server on localhost. Next to it, in the same
run, the model's own inference time, so the figure reads as "model + X ms".

    python benchmarks/line_latency.py [--bundle B] [--frame 2448x2048] [--frames 30]

Without --bundle, a random-weight EfficientAD-S with its int8 variant is built, as
`edge-ad train --int8` writes them (same compute as a trained one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the stand-in PLC lives with the tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle")
    parser.add_argument("--frame", default="2448x2048")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from servers import ModbusPLC

    from edge_sdk import Inspector
    from edge_sdk.line.pipeline import Pipeline, PipelineOptions
    from edge_sdk.sinks import build_runner, parse_sink_configs
    from edge_sdk.sources.files import FolderSource

    width, height = (int(v) for v in args.frame.split("x"))
    plc = ModbusPLC().start()
    strobes: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        folder.mkdir()
        rng = np.random.default_rng(0)
        cv2.imwrite(
            str(folder / "frame.png"), rng.integers(0, 256, (height, width), dtype=np.uint8)
        )
        if args.bundle:
            bundle = Path(args.bundle)
        else:
            sys.path.insert(0, str(HERE))
            from inspector_overhead import random_bundle

            bundle = random_bundle(Path(tmp), "efficientad-s", int8=True)
        inspector = Inspector.open(bundle, device=args.device)
        # Pace well below the model's rate so that queueing does not enter the figure.
        model_ms = inspector.engine.warmup(runs=3)
        rate = 1e3 / (model_ms * 2.5 + 20)
        (config,) = parse_sink_configs(
            [{"type": "modbus", "host": "127.0.0.1", "port": plc.port, "pulse_s": 0.005}]
        )
        runner = build_runner(config)
        runner.sink.on_strobe = lambda insp, ns: strobes.__setitem__(
            insp.result.frame_id, ns - insp.acquired_ns
        )
        source = FolderSource(folder, rate_hz=rate, loop=True)
        pipeline = Pipeline(source, inspector, [runner], PipelineOptions(deadline_ms=60_000))
        pipeline.start()
        deadline = time.monotonic() + args.frames / rate + 60
        while len(strobes) < args.frames and time.monotonic() < deadline:
            time.sleep(0.05)
        pipeline.close()
        plc.stop()
    snap = pipeline.snapshot()
    e2e = [v / 1e6 for v in strobes.values()][2:]  # the first frames warm the sink up
    infer = snap.latency_ms["infer"]["p50"]
    report = {
        "frame": f"{width}x{height} mono8",
        "frames": len(e2e),
        "provider": inspector.provider,
        "variant": inspector.engine.variant,
        "resize": inspector.manifest.model.input.resize,
        "acquired_to_plc_bit_ms": {
            "p50": statistics.median(e2e),
            "p99": float(np.percentile(e2e, 99)),
        },
        "stages_p50_ms": {k: v["p50"] for k, v in snap.latency_ms.items()},
        "model_infer_p50_ms": infer,
        "overhead_over_model_p50_ms": statistics.median(e2e) - infer,
        "ratio_to_model": statistics.median(e2e) / infer,
    }
    print(
        f"{report['frame']}, {report['variant']} on {report['provider']}, {report['frames']} frames"
    )
    print(
        f"  frame acquired -> PLC result_valid written: p50 "
        f"{report['acquired_to_plc_bit_ms']['p50']:.1f} ms, p99 "
        f"{report['acquired_to_plc_bit_ms']['p99']:.1f} ms"
    )
    print(
        f"  model inference p50 {infer:.1f} ms; the rest of the line adds "
        f"{report['overhead_over_model_p50_ms']:.1f} ms (x{report['ratio_to_model']:.3f})"
    )
    print("  stages p50: " + ", ".join(f"{k} {v:.2f}" for k, v in report["stages_p50_ms"].items()))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"line_latency_{width}x{height}.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
