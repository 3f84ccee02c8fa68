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


_CPU_DEVICES = ("cpu", "openvino")
_GPU_DEVICES = ("cuda", "tensorrt")


@dataclass(frozen=True)
class BenchOptions:
    devices: tuple[str, ...] = ()  # empty: every provider installed (see `installed_devices`)
    variants: tuple[str, ...] = ()  # empty: every graph in the bundle
    batches: tuple[int, ...] = (1, 8)
    rounds: int = 20
    frame: tuple[int, int] = (256, 256)  # camera frame height, width (mono8)
    threads: int = 0
    reference: bool = True


def installed_devices() -> tuple[str, ...]:
    """The devices this onnxruntime can run: cpu, plus openvino, cuda, tensorrt if present."""
    from edge_sdk.engine import available_providers
    from edge_sdk.errors import require

    ort = require("onnxruntime", extra="gpu", feature="benchmarks")
    have = available_providers(ort)
    named = {
        "openvino": "OpenVINOExecutionProvider",
        "cuda": "CUDAExecutionProvider",
        "tensorrt": "TensorrtExecutionProvider",
    }
    return ("cpu", *(d for d, p in named.items() if p in have))


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(ms), "p99": float(np.percentile(ms, 99)), "min": min(ms)}


def run_bench(bundle_path: str, options: BenchOptions) -> dict[str, Any]:
    """Measure and return a JSON-ready report (see `format_report`)."""
    bundle = Bundle.open(bundle_path)
    spec = bundle.manifest.model.input
    devices = options.devices or installed_devices()
    variants = options.variants or tuple(bundle.variants())
    max_batch = max(options.batches)
    inspectors = {
        (d, v): Inspector.open(
            bundle,
            device=d,  # type: ignore[arg-type]
            variant=v,
            threads=options.threads,
            max_batch=max_batch,
        )
        for d in devices
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
    for (d, v), inspector in inspectors.items():
        for b in options.batches:
            key = f"{d}/{v}/batch{b}"
            stage_log[key] = {"preprocess": [], "infer": [], "decide": [], "rechecked": []}

            def task(inspector: Inspector = inspector, b: int = b, key: str = key) -> Any:
                results = inspector.inspect_batch(frames[:b])
                lat = results[0].latency
                stage_log[key]["preprocess"].append(lat.preprocess_ms)
                stage_log[key]["infer"].append(lat.infer_ms)
                stage_log[key]["decide"].append(lat.decide_ms)
                # parts a faster variant scored near the threshold, re-decided by float32
                stage_log[key]["rechecked"].append(
                    sum(r.graph != inspector.engine.variant for r in results) / len(results)
                )

            tasks[key] = task
    reference = None
    # A GPU is compared with PyTorch on that GPU, a CPU with PyTorch on the CPU.
    ref_device = "cuda" if set(devices) & set(_GPU_DEVICES) else "cpu"
    if options.reference:
        try:
            from edge_sdk.training.reference import torch_reference
        except ImportError as exc:
            log.warning("no PyTorch reference (%s): pip install 'edge-ad[train]'", exc)
        else:
            reference = torch_reference(bundle, options.threads, device=ref_device)
    if reference is not None:
        tasks["pytorch-eager/fp32/batch1"] = lambda: reference(prepared[:1])
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
        device, variant, batch_text = key.split("/")
        batch = int(batch_text.removeprefix("batch"))
        row: dict[str, Any] = {
            "name": key,
            "device": device,
            "variant": variant,
            "batch": batch,
            "batch_ms": _summary(ms),
            "per_image_ms": statistics.median(ms) / batch,
            "images_per_s": 1e3 * batch / statistics.median(ms),
        }
        if key in stage_log:
            log_ = stage_log[key]
            row["stages_per_image_ms"] = {
                s: statistics.median(log_[s]) for s in ("preprocess", "infer", "decide")
            }
            row["rechecked_fraction"] = statistics.mean(log_["rechecked"])
        rows.append(row)
    floors = _floors(bundle, variants, options) if set(devices) & set(_CPU_DEVICES) else {}
    for row in rows:
        if row["device"] in _CPU_DEVICES and row["variant"] in floors:
            row["floor_ms"] = floors[row["variant"]]["floor_ms"]
            row["x_floor"] = row["per_image_ms"] / row["floor_ms"]
    ref_row = next((r for r in rows if r["device"] == "pytorch-eager"), None)
    if ref_row is not None:
        for row in rows:
            row["speedup_vs_reference"] = ref_row["per_image_ms"] / row["per_image_ms"]
    return {
        "bundle": str(bundle.path),
        "architecture": bundle.manifest.model.architecture,
        "providers": {d: inspectors[d, variants[0]].provider for d in devices},
        "frame": f"{w}x{h} mono8",
        "rounds": options.rounds,
        "threads": options.threads,
        "machine": platform.processor() or platform.machine(),
        "reference_device": ref_device if reference is not None else None,
        "gpu": _gpu_name() if ref_device == "cuda" else None,
        "peaks": floors,
        "rows": rows,
    }


def _gpu_name() -> str | None:
    try:
        import torch

        return str(torch.cuda.get_device_name(0))
    except Exception:  # no torch, or no GPU it can see
        return None


def _floors(
    bundle: Bundle, variants: tuple[str, ...], options: BenchOptions
) -> dict[str, dict[str, Any]]:
    """Per numeric kind, the model's convolutions at this machine's best measured peak
    (the fastest CPU provider installed, whichever is being benchmarked)."""
    try:
        from edge_sdk.peak import conv_macs, measure_peak

        macs = conv_macs(bundle.graph("fp32"))
    except ImportError as exc:
        log.warning("no floor estimate (%s)", exc)
        return {}
    cpu_side = [d for d in installed_devices() if d in _CPU_DEVICES]
    out: dict[str, dict[str, Any]] = {}
    for variant, int8 in (("fp32", False), ("fp16", False), ("int8", True)):
        if variant not in variants:
            continue
        by_device = {
            d: max(measure_peak(int8=int8, threads=options.threads, device=d)["gops"] for _ in "ab")
            for d in cpu_side
        }
        best = max(by_device, key=by_device.__getitem__)
        out[variant] = {
            "peak_gops": by_device[best],
            "peak_device": best,
            "peak_gops_by_device": by_device,
            "gmac": macs / 1e9,
            "floor_ms": 2 * macs / (by_device[best] * 1e9) * 1e3,
        }
    return out


def format_report(report: dict[str, Any]) -> str:
    providers = ", ".join(f"{d}={p}" for d, p in report["providers"].items())
    lines = [
        f"{report['architecture']}, frame {report['frame']}, {report['rounds']} interleaved "
        f"rounds ({providers})",
        f"{'device / graph / batch':<30}{'p50 ms':>9}{'p99 ms':>9}{'ms/img':>9}{'img/s':>8}"
        f"{'pre':>7}{'infer':>8}{'decide':>7}{'x ref':>7}{'x floor':>8}",
    ]
    for row in report["rows"]:
        st = row.get("stages_per_image_ms", {})
        stage = f"{st['preprocess']:7.2f}{st['infer']:8.1f}{st['decide']:7.2f}" if st else " " * 22
        speed = f"{row['speedup_vs_reference']:7.2f}" if "speedup_vs_reference" in row else ""
        speed += f"{row['x_floor']:8.2f}" if "x_floor" in row else ""
        lines.append(
            f"{row['name']:<30}{row['batch_ms']['p50']:9.1f}"
            f"{row['batch_ms']['p99']:9.1f}{row['per_image_ms']:9.1f}"
            f"{row['images_per_s']:8.2f}{stage}{speed}"
        )
    for variant, peak in report.get("peaks", {}).items():
        each = ", ".join(f"{d} {g:.0f}" for d, g in peak["peak_gops_by_device"].items())
        lines.append(
            f"floor {variant}: {peak['gmac']:.1f} GMAC at the best measured peak of "
            f"{peak['peak_gops']:.0f} GOP/s ({each}) = {peak['floor_ms']:.1f} ms per image"
        )
    return "\n".join(lines)
