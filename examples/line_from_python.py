"""Run a line from Python: camera -> model -> your callback, start and stop it yourself,
and inspect an image on demand in between.

Run it (the GenICam simulator from the `genicam` wheel stands in for a camera):

    python examples/line_from_python.py --bundle screw.bundle [--camera 0] [--seconds 5]

Without --bundle it takes the demo bundle that `scripts/demo` caches, and where there is
none it builds a tiny stand-in model (brightness, not EfficientAD: it rejects every frame)
so that the example runs on a bare checkout.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edge_sdk import Inspector, Verdict
from edge_sdk.line.pipeline import Mode, Pipeline, PipelineOptions
from edge_sdk.sinks import CallbackSink, Inspection, SinkRunner
from edge_sdk.sources import GenICamSource
from edge_sdk.sources.profiles import load_profile

REPO = Path(__file__).resolve().parents[1]


def stand_in_bundle(folder: Path) -> Path:
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_graphs import brightness_graph, write_tiny_bundle

    return write_tiny_bundle(folder / "stand-in.bundle", brightness_graph())


def default_bundle(folder: Path) -> Path:
    from edge_sdk.tools.demo import demo_bundle_path

    demo = demo_bundle_path()
    return demo if demo.exists() else stand_in_bundle(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle")
    parser.add_argument("--camera", default="0")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    verdicts: Counter[str] = Counter()

    def on_result(inspection: Inspection) -> None:
        # Runs on the sink's own thread: a slow callback never holds up inspection.
        verdicts[inspection.result.verdict.value] += 1
        if inspection.result.verdict is not Verdict.OK and verdicts["reported"] < 3:
            verdicts["reported"] += 1
            print(
                f"reject: frame {inspection.frame.frame_id} "
                f"score {inspection.result.score:.3f} ({inspection.result.error or 'NOK'})"
            )

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or default_bundle(Path(tmp))
        print(f"bundle {bundle}")
        camera = GenICamSource(
            args.camera, profile=load_profile(REPO / "calibration" / "viky-mono8.yaml")
        )
        with Inspector.open(bundle) as inspector:
            print(f"model on {inspector.provider}")
            line = Pipeline(
                camera,
                inspector,
                [SinkRunner(CallbackSink(on_result))],
                # The simulator streams freely: inspect the newest frame (free run). A
                # triggered camera, where every frame is a part, wants Mode.PER_PART.
                PipelineOptions(mode=Mode.FREE_RUN, deadline_ms=1000),
            )
            line.start()
            try:
                time.sleep(args.seconds / 2)
                # Inspect on demand while the line runs: own buffers, so use a second
                # Inspector (an Inspector is not shared between threads).
                with Inspector.open(bundle, warmup=False) as spot:
                    check = spot.inspect(np.full((480, 640), 255, np.uint8))
                    print(f"on-demand check of a white image: {check.verdict.value}")
                time.sleep(args.seconds / 2)
            finally:
                line.close()  # finishes or fails safe every frame in flight
            snap = line.snapshot()
            verdicts.pop("reported", None)
            infer = snap.latency_ms.get("infer", {}).get("p50", float("nan"))
            print(
                f"{snap.frames} frames, {snap.results} inspected "
                f"({snap.dropped_free_run} replaced by newer ones), verdicts "
                f"{dict(verdicts)}, infer p50 {infer:.2f} ms"
            )


if __name__ == "__main__":
    main()
