"""What the Inspector adds over a bare `session.run` of the same graph.

Interleaves, image by image, (a) a bare `session.run` of the graph on an already prepared
uint8 batch and (b) `Inspector.inspect` on a camera-sized image (preprocessing, graph,
normalisation, decision), so machine noise hits both alike. Both use the same ONNX Runtime
session (the engine's settings: no thread spinning, see edge_sdk/runtime/providers.py): a second
session in the process would change the result by competing for the cores. Prints
medians, p99 and the ratio; writes the figures to benchmarks/results/.

    python benchmarks/inspector_overhead.py                 # random-weight EfficientAD-S
    python benchmarks/inspector_overhead.py --bundle B --frame 2448x2048 --rounds 60
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def random_bundle(folder: Path, architecture: str, *, int8: bool = False) -> Path:
    """A random-weight bundle as `edge-ad train` writes them (its resize mode), with the
    int8 variant when asked (gate overridden: random weights decide nothing)."""
    import torch

    from edge_sdk.tools.synthetic import good_part
    from edge_sdk.training import networks
    from edge_sdk.training.export import export_bundle
    from edge_sdk.training.recipe import INPUT_RESIZE

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    bundle = export_bundle(
        folder / "bench.bundle",
        architecture=architecture,  # type: ignore[arg-type]
        teacher=networks.teacher(architecture),
        student=networks.student(architecture),
        autoencoder=networks.autoencoder(),
        teacher_mean=torch.zeros(384),
        teacher_std=torch.ones(384),
        calibration_images=[good_part(rng) for _ in range(4)],
        name="bench",
        resize=INPUT_RESIZE,
    )
    if not int8:
        return bundle
    from edge_sdk.runtime.variants import add_variant

    good = [good_part(rng) for _ in range(8)]
    out, _ = add_variant(
        bundle, folder / "bench-int8.bundle", kind="int8", good=good, allow_flips=True
    )
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle to measure (default: random-weight model)")
    parser.add_argument("--model", default="s", choices=["s", "m"])
    parser.add_argument("--frame", default="256x256", help="camera frame WxH (grey)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    from edge_sdk import Bundle, Inspector
    from edge_sdk.runtime.preprocess import to_model_input

    with tempfile.TemporaryDirectory() as tmp:
        path = (
            Path(args.bundle)
            if args.bundle
            else random_bundle(Path(tmp), f"efficientad-{args.model}")
        )
        bundle = Bundle.open(path)
        inspector = Inspector.open(bundle, device="cpu", threads=args.threads)
        bare = inspector.engine.session
        spec = bundle.manifest.model
        width, height = (int(v) for v in args.frame.lower().split("x"))
        frame = np.random.default_rng(1).integers(0, 256, (height, width), dtype=np.uint8)
        prepared = np.zeros((1, 3, spec.input.height, spec.input.width), np.uint8)
        to_model_input(frame, prepared[0], resize=spec.input.resize)
        feeds = {spec.input.name: prepared}
        outputs = [spec.outputs.map_st, spec.outputs.map_ae]
        for _ in range(3):
            bare.run(outputs, feeds)
            inspector.inspect(frame)

        bare_ms: list[float] = []
        insp_ms: list[float] = []
        stages: dict[str, list[float]] = {"preprocess": [], "infer": [], "decide": []}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            bare.run(outputs, feeds)
            t1 = time.perf_counter()
            result = inspector.inspect(frame)
            t2 = time.perf_counter()
            bare_ms.append((t1 - t0) * 1e3)
            insp_ms.append((t2 - t1) * 1e3)
            stages["preprocess"].append(result.latency.preprocess_ms)
            stages["infer"].append(result.latency.infer_ms)
            stages["decide"].append(result.latency.decide_ms)
        pair_ratios = [i / b for i, b in zip(insp_ms, bare_ms, strict=True)]

    report = {
        "model": spec.architecture,
        "variant": inspector.engine.variant,
        "provider": inspector.provider,
        "frame": f"{width}x{height} mono8",
        "rounds": args.rounds,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "bare_session_run_ms": {"p50": statistics.median(bare_ms), "p99": percentile(bare_ms, 99)},
        "inspector_ms": {"p50": statistics.median(insp_ms), "p99": percentile(insp_ms, 99)},
        "inspector_stages_p50_ms": {k: statistics.median(v) for k, v in stages.items()},
        "ratio_of_medians": statistics.median(insp_ms) / statistics.median(bare_ms),
        "median_pair_ratio": statistics.median(pair_ratios),
    }
    print(
        f"{report['model']} {report['variant']} on {report['provider']}, frame "
        f"{report['frame']}, {args.rounds} interleaved rounds"
    )
    print(
        f"  bare session.run   p50 {report['bare_session_run_ms']['p50']:8.2f} ms   "
        f"p99 {report['bare_session_run_ms']['p99']:8.2f} ms"
    )
    print(
        f"  Inspector.inspect  p50 {report['inspector_ms']['p50']:8.2f} ms   "
        f"p99 {report['inspector_ms']['p99']:8.2f} ms"
    )
    st = report["inspector_stages_p50_ms"]
    print(
        f"    stages p50: preprocess {st['preprocess']:.3f} ms, infer {st['infer']:.2f} ms, "
        f"decide {st['decide']:.3f} ms"
    )
    print(
        f"  Inspector / bare: ratio of medians {report['ratio_of_medians']:.3f}, "
        f"median of paired ratios {report['median_pair_ratio']:.3f}"
    )
    RESULTS.mkdir(exist_ok=True)
    name = f"inspector_overhead_{spec.architecture}_{width}x{height}.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
