"""Do the bundle's faster variants decide like its fp32 graph on a whole test set?

Runs every test image of an MVTec-layout data set through the fp32 graph on ONNX Runtime's
CPU provider (the reference) and through each other variant on each CPU provider installed
(ONNX Runtime's CPU kernels, OpenVINO), alone and as the Inspector runs it by default
(near-threshold parts re-decided by float32), and counts the verdicts that flip at the
bundle's threshold, the parts re-decided, and the time per part (whole Inspector). Also
prints the largest score difference and the image AUROC of each, so a variant that keeps
every verdict but loses ranking shows too. Writes the figures to benchmarks/results/.

    python benchmarks/variant_flips.py --bundle mt.bundle ../shared/data/magnetic_tile
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    from edge_sdk import Bundle, Inspector, Verdict
    from edge_sdk.evaluation.dataset import find_test_set, read_image
    from edge_sdk.statistics import auroc
    from edge_sdk.tools.bench import installed_devices

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="data set folder with test/good and test/<defect>")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--limit", type=int, default=0, help="at most this many images")
    parser.add_argument(
        "--variant", action="append", help="variant to compare (repeatable; default: all)"
    )
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/...)")
    args = parser.parse_args()

    if not Path(args.data).is_dir():
        print(f"skipped: no data set at {args.data}", file=sys.stderr)
        return 0
    bundle = Bundle.open(args.bundle)
    samples = find_test_set(args.data).samples
    if args.limit:
        samples = samples[:: max(1, len(samples) // args.limit)][: args.limit]
    runs = {"cpu/fp32": Inspector.open(bundle, device="cpu", variant="fp32")}
    for device in (d for d in installed_devices() if d in ("cpu", "openvino")):
        for variant in args.variant or bundle.variants():
            if f"{device}/{variant}" in runs:
                continue
            # The variant alone, and as the Inspector runs it by default: parts scored near
            # the threshold re-decided by float32.
            raw = Inspector.open(bundle, device=device, variant=variant, recheck=False)
            runs[f"{device}/{variant}"] = raw
            guarded = Inspector.open(bundle, device=device, variant=variant)
            if guarded.recheck is not None:
                runs[f"{device}/{variant}+recheck"] = guarded
    scores: dict[str, list[float]] = {k: [] for k in runs}
    verdicts: dict[str, list[Verdict]] = {k: [] for k in runs}
    rechecked: dict[str, int] = {k: 0 for k in runs}
    ms: dict[str, list[float]] = {k: [] for k in runs}
    for n, sample in enumerate(samples, 1):
        image = read_image(sample.path)
        for key, inspector in runs.items():
            start = time.perf_counter()
            result = inspector.inspect(image)
            ms[key].append((time.perf_counter() - start) * 1e3)
            if result.verdict is Verdict.ERROR:
                raise SystemExit(f"{sample.path}: {key} gave ERROR: {result.error}")
            rechecked[key] += result.graph != inspector.engine.variant
            scores[key].append(result.score)
            verdicts[key].append(result.verdict)
        if n % 50 == 0:
            print(f"{n}/{len(samples)} images", file=sys.stderr)

    defective = np.array([s.is_defective for s in samples])
    reference = np.array(scores["cpu/fp32"])
    rows = []
    for key in runs:
        s = np.array(scores[key])
        flipped = [
            str(sample.path)
            for sample, a, b in zip(samples, verdicts["cpu/fp32"], verdicts[key], strict=True)
            if a is not b
        ]
        rows.append(
            {
                "run": key,
                "provider": runs[key].provider,
                "verdict_flips": len(flipped),
                "flipped": flipped,
                "rechecked_in_fp32": rechecked[key],
                "ms_per_part": {
                    "p50": float(np.median(ms[key])),
                    "mean": float(np.mean(ms[key])),
                    "p99": float(np.percentile(ms[key], 99)),
                },
                "recheck_margin": runs[key].recheck_margin if runs[key].recheck else None,
                "max_score_difference": float(np.max(np.abs(s - reference))),
                "image_auroc": auroc(s[~defective], s[defective]) if defective.any() else None,
            }
        )
    report = {
        "bundle": str(bundle.path),
        "data": str(Path(args.data).absolute()),
        "images": len(samples),
        "defective": int(defective.sum()),
        "threshold": bundle.manifest.threshold.image,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }
    print(f"{len(samples)} images ({int(defective.sum())} defective), reference cpu/fp32")
    print(
        f"{'run':<24}{'flips':>7}{'max |score diff|':>18}{'image AUROC':>13}{'rechecked':>11}"
        f"{'p50 ms':>9}{'mean ms':>9}"
    )
    for row in rows:
        auc = f"{row['image_auroc']:.4f}" if row["image_auroc"] is not None else "-"
        print(
            f"{row['run']:<24}{row['verdict_flips']:>7}"
            f"{row['max_score_difference']:>18.5f}{auc:>13}{row['rechecked_in_fp32']:>11}"
            f"{row['ms_per_part']['p50']:>9.1f}{row['ms_per_part']['mean']:>9.1f}"
        )
    out = Path(args.out) if args.out else RESULTS / f"variant_flips_{Path(args.data).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
