"""`edge-ad bench`: latency and throughput of a bundle, per variant and batch size, next to
a reference measured in the same run (the same weights in PyTorch eager, as the reference
EfficientAD code runs them), so the figures are ratios a noisy machine cannot fake.

Rounds are interleaved across everything measured (variant A, variant B, reference, A,
...), so a burst of load from elsewhere hits all of them alike.
"""

from __future__ import annotations

import logging
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.inspector import Inspector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    device: str = "cpu"
    variants: tuple[str, ...] = ()  # empty: every graph in the bundle
    batches: tuple[int, ...] = (1, 8)
    rounds: int = 20
    frame: tuple[int, int] = (256, 256)  # camera frame height, width (mono8)
    threads: int = 0
    reference: bool = True


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(ms), "p99": float(np.percentile(ms, 99)), "min": min(ms)}


def run_bench(bundle_path: str, options: BenchOptions) -> dict[str, Any]:
    """Measure and return a JSON-ready report (see `format_report`)."""
    bundle = Bundle.open(bundle_path)
    spec = bundle.manifest.model.input
    variants = options.variants or tuple(bundle.variants())
    max_batch = max(options.batches)
    inspectors = {
        v: Inspector.open(
            bundle,
            device=options.device,  # type: ignore[arg-type]
            variant=v,
            threads=options.threads,
            max_batch=max_batch,
        )
        for v in variants
    }
    rng = np.random.default_rng(0)
    h, w = options.frame
    frames = [rng.integers(0, 256, (h, w), dtype=np.uint8) for _ in range(max_batch)]
    prepared = np.zeros((max_batch, 3, spec.height, spec.width), np.uint8)
    from edge_sdk.preprocess import to_model_input

    for k, frame in enumerate(frames):
        to_model_input(frame, prepared[k], resize=spec.resize)

    tasks: dict[str, Callable[..., Any]] = {}
    stage_log: dict[str, dict[str, list[float]]] = {}
    for v, inspector in inspectors.items():
        for b in options.batches:
            key = f"{v}/batch{b}"
            stage_log[key] = {"preprocess": [], "infer": [], "decide": []}

            def task(inspector: Inspector = inspector, b: int = b, key: str = key) -> Any:
                results = inspector.inspect_batch(frames[:b])
                lat = results[0].latency
                stage_log[key]["preprocess"].append(lat.preprocess_ms)
                stage_log[key]["infer"].append(lat.infer_ms)
                stage_log[key]["decide"].append(lat.decide_ms)

            tasks[key] = task
    reference = None
    if options.reference:
        try:
            from edge_sdk.training.reference import torch_reference
        except ImportError as exc:
            log.warning("no PyTorch reference (%s): pip install 'edge-ad[train]'", exc)
        else:
            reference = torch_reference(bundle, options.threads)
    if reference is not None:
        tasks["pytorch-eager-fp32/batch1"] = lambda: reference(prepared[:1])
    for task in tasks.values():  # warm-up
        task()
    times: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(options.rounds):
        for key, task in tasks.items():
            t0 = time.perf_counter()
            task()
            times[key].append((time.perf_counter() - t0) * 1e3)

    rows = []
    for key, ms in times.items():
        batch = int(key.rsplit("batch", 1)[1])
        row: dict[str, Any] = {
            "name": key,
            "batch": batch,
            "batch_ms": _summary(ms),
            "per_image_ms": statistics.median(ms) / batch,
            "images_per_s": 1e3 * batch / statistics.median(ms),
        }
        if key in stage_log:
            row["stages_per_image_ms"] = {
                s: statistics.median(v) for s, v in stage_log[key].items()
            }
        rows.append(row)
    floors = _floors(bundle, options) if options.device in ("cpu", "auto") else {}
    for row in rows:
        variant = row["name"].split("/")[0]
        if variant in floors:
            row["floor_ms"] = floors[variant]["floor_ms"]
            row["x_floor"] = row["per_image_ms"] / floors[variant]["floor_ms"]
    ref_row = next((r for r in rows if r["name"].startswith("pytorch")), None)
    if ref_row is not None:
        for row in rows:
            row["speedup_vs_reference"] = ref_row["per_image_ms"] / row["per_image_ms"]
    first = next(iter(inspectors.values()))
    return {
        "bundle": str(bundle.path),
        "architecture": bundle.manifest.model.architecture,
        "provider": first.provider,
        "frame": f"{w}x{h} mono8",
        "rounds": options.rounds,
        "threads": options.threads,
        "machine": platform.processor() or platform.machine(),
        "peaks": floors,
        "rows": rows,
    }


def _floors(bundle: Bundle, options: BenchOptions) -> dict[str, dict[str, float]]:
    """Per numeric kind, the model's convolutions at this machine's measured peak."""
    try:
        from edge_sdk.peak import conv_macs, measure_peak

        macs = conv_macs(bundle.graph("fp32"))
    except ImportError as exc:
        log.warning("no floor estimate (%s)", exc)
        return {}
    out = {}
    for variant, int8 in (("fp32", False), ("fp16", False), ("int8", True)):
        if variant not in bundle.variants():
            continue
        peak = max(measure_peak(int8=int8, threads=options.threads)["gops"] for _ in range(2))
        out[variant] = {
            "peak_gops": peak,
            "gmac": macs / 1e9,
            "floor_ms": 2 * macs / (peak * 1e9) * 1e3,
        }
    return out


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"{report['architecture']} on {report['provider']}, frame {report['frame']}, "
        f"{report['rounds']} interleaved rounds",
        f"{'graph / batch':<26}{'p50 ms':>9}{'p99 ms':>9}{'ms/img':>9}{'img/s':>8}"
        f"{'pre':>7}{'infer':>8}{'decide':>7}{'x ref':>7}{'x floor':>8}",
    ]
    for row in report["rows"]:
        st = row.get("stages_per_image_ms", {})
        stage = f"{st['preprocess']:7.2f}{st['infer']:8.1f}{st['decide']:7.2f}" if st else " " * 22
        speed = f"{row['speedup_vs_reference']:7.2f}" if "speedup_vs_reference" in row else ""
        speed += f"{row['x_floor']:8.2f}" if "x_floor" in row else ""
        lines.append(
            f"{row['name']:<26}{row['batch_ms']['p50']:9.1f}"
            f"{row['batch_ms']['p99']:9.1f}{row['per_image_ms']:9.1f}"
            f"{row['images_per_s']:8.2f}{stage}{speed}"
        )
    for variant, peak in report.get("peaks", {}).items():
        lines.append(
            f"floor {variant}: {peak['gmac']:.1f} GMAC at the measured peak of "
            f"{peak['peak_gops']:.0f} GOP/s = {peak['floor_ms']:.1f} ms per image"
        )
    return "\n".join(lines)
