"""`edge-ad bench`: latency and throughput of a bundle, per variant and batch size, next to
a reference measured in the same run (the same weights in PyTorch eager, as the reference
EfficientAD code runs them), so the figures are ratios a noisy machine cannot fake.

Rounds are interleaved across everything measured (variant A, variant B, reference, A,
...), so a burst of load from elsewhere hits all of them alike. The machine's peak (the
reference convolutions of edge_sdk.tools.peak, on each CPU provider) runs in the same rounds: on
a shared host its measured int8 peak moved between 1.1 and 2.2 TOP/s from one run to the
next, and a peak measured apart from the model made the model's distance to it meaningless.
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

from edge_sdk.runtime.bundle import Bundle
from edge_sdk.runtime.inspector import Inspector

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
    from edge_sdk.errors import require
    from edge_sdk.runtime.providers import available_providers

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
    from edge_sdk.runtime.preprocess import to_model_input

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
    peaks = _peak_tasks(bundle, variants, options) if set(devices) & set(_CPU_DEVICES) else {}
    for key, conv in peaks.items():
        tasks[key] = conv.run
    for task in tasks.values():  # warm-up
        task()
    times: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(options.rounds):
        for key, task in tasks.items():
            t0 = time.perf_counter()
            task()
            times[key].append((time.perf_counter() - t0) * 1e3)

    floors = _floors(bundle, peaks, times)
    if "fp16" in variants and "fp32" in floors:
        floors["fp16"] = floors["fp32"]
    rows = []
    for key, ms in times.items():
        if key in peaks:
            continue
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
    """The first GPU's name as the driver reports it (None without nvidia-smi)."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _peak_tasks(bundle: Bundle, variants: tuple[str, ...], options: BenchOptions) -> dict[str, Any]:
    """The reference convolutions (edge_sdk.tools.peak) on every CPU provider installed, for each
    numeric kind the bundle has, keyed "peak/<kind>/<device>/<channels>x<size>": they run in
    the same interleaved rounds as the model."""
    try:
        from edge_sdk.tools.peak import peak_convs
    except ImportError as exc:
        log.warning("no floor estimate (%s)", exc)
        return {}
    cpu_side = [d for d in installed_devices() if d in _CPU_DEVICES]
    tasks: dict[str, Any] = {}
    for kind, int8 in (("fp32", False), ("int8", True)):
        if kind not in variants and not (kind == "fp32" and "fp16" in variants):
            continue  # fp16 on a CPU is judged against the float32 peak
        for device in cpu_side:
            for conv in peak_convs(int8=int8, threads=options.threads, device=device):
                tasks[f"peak/{kind}/{device}/{conv.channels}x{conv.size}"] = conv
    return tasks


def _floors(
    bundle: Bundle, peaks: dict[str, Any], times: dict[str, list[float]]
) -> dict[str, dict[str, Any]]:
    """Per numeric kind, the model's convolutions at this machine's best measured peak:
    the fastest reference convolution on the fastest CPU provider installed, whichever is
    being benchmarked (a provider's peak is a property of its kernels too)."""
    if not peaks:
        return {}
    try:
        from edge_sdk.tools.peak import conv_macs

        macs = conv_macs(bundle.graph("fp32"))
    except ImportError as exc:
        log.warning("no floor estimate (%s)", exc)
        return {}
    out: dict[str, dict[str, Any]] = {}
    for key, conv in peaks.items():
        _, kind, device, shape = key.split("/")
        gops = conv.gops(statistics.median(times[key]) / 1e3)
        entry = out.setdefault(kind, {"peak_gops_by_device": {}, "by_shape": {}})
        entry["by_shape"][f"{device}/{shape}"] = gops
        by_device = entry["peak_gops_by_device"]
        by_device[device] = max(by_device.get(device, 0.0), gops)
    for entry in out.values():
        by_device = entry["peak_gops_by_device"]
        best = max(by_device, key=by_device.__getitem__)
        entry.update(
            peak_gops=by_device[best],
            peak_device=best,
            gmac=macs / 1e9,
            floor_ms=2 * macs / (by_device[best] * 1e9) * 1e3,
        )
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
