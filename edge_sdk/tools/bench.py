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

import dataclasses
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_sdk.runtime.bundle import Bundle
from edge_sdk.runtime.inspector import Inspector
from edge_sdk.tools.cpu_units import CpuInfo, Unit, best_units, cpu_info

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
    load_before = _load_average()
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
    cpu = cpu_info()
    clock = None
    if cpu is not None and set(devices) & set(_CPU_DEVICES):
        clock = _add_instruction_floors(floors, bundle, cpu, variants, options.threads)
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
        floor = floors.get(row["variant"], {}) if row["device"] in _CPU_DEVICES else {}
        if "floor_ms" in floor:
            row["floor_ms"] = floor["floor_ms"]
            row["x_floor"] = row["per_image_ms"] / row["floor_ms"]
        if "instruction" in floor:
            row["instruction_floor_ms"] = floor["instruction"]["floor_ms"]
            row["x_instruction_floor"] = row["per_image_ms"] / row["instruction_floor_ms"]
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
        "cpu": cpu.record() if cpu is not None else None,
        "clock": clock,
        "load_average": {"before": load_before, "after": _load_average()},
        "reference_device": ref_device if reference is not None else None,
        "gpu": _gpu_name() if ref_device == "cuda" else None,
        "peaks": floors,
        "rows": rows,
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _add_instruction_floors(
    floors: dict[str, dict[str, Any]],
    bundle: Bundle,
    cpu: CpuInfo,
    variants: tuple[str, ...],
    threads: int,
) -> dict[str, Any] | None:
    """Per numeric kind, the model at the CPU's instruction-level peak (tools/cpu_units): a
    floor no kernel reaches, next to the measured one. The float graph gets the bf16 unit's
    too where the CPU has one (bf16 execution is a candidate for it). Returns the clock
    used and where it came from."""
    try:
        from edge_sdk.tools.peak import conv_macs

        macs = conv_macs(bundle.graph("fp32"))
    except ImportError as exc:
        log.warning("no instruction-level floor (%s)", exc)
        return None
    cores = threads if 0 < threads < cpu.physical_cores else cpu.physical_cores
    units = best_units(dataclasses.replace(cpu, physical_cores=cores))
    # A VM states its nominal clock and hides the boost: a measured rate above the
    # instruction-level peak at that clock shows the core runs faster. The floor then
    # uses the least clock that explains the measurement, and says so.
    implied = [
        floors[kind]["peak_gops"] / (2 * units[kind].macs_per_cycle * cores)
        for kind in ("fp32", "int8")
        if "peak_gops" in floors.get(kind, {})
    ]
    clock = max([cpu.clock_ghz, *implied])
    if not clock:
        log.warning("no instruction-level floor: the CPU's clock is not known")
        return None
    used = {"ghz": round(clock, 3), "source": cpu.clock_source}
    if clock > cpu.clock_ghz:
        units = {k: dataclasses.replace(u, clock_ghz=clock) for k, u in units.items()}
        used["source"] = (
            f"implied by the measured peak ({cpu.clock_source} says {cpu.clock_ghz:.3g} GHz)"
        )

    def at(unit: Unit) -> dict[str, Any]:
        return {**unit.record(), "floor_ms": round(2 * macs / (unit.peak_gops * 1e9) * 1e3, 3)}

    for kind in ("fp32", "int8"):
        if kind not in variants and not (kind == "fp32" and "fp16" in variants):
            continue
        entry = floors.setdefault(kind, {"gmac": macs / 1e9})
        entry["instruction"] = at(units[kind])
        if kind == "fp32" and "bf16" in units:
            entry["instruction_bf16"] = at(units["bf16"])
    return used


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
    """The reference convolutions (edge_sdk.tools.peak) and the model's own largest one on
    every CPU provider installed, for each numeric kind the bundle has, keyed
    "peak/<kind>/<device>/<shape>": they run in the same interleaved rounds as the model."""
    try:
        from edge_sdk.tools.peak import largest_conv, peak_convs

        model = largest_conv(bundle.graph("fp32"))
    except ImportError as exc:
        log.warning("no floor estimate (%s)", exc)
        return {}
    cpu_side = [d for d in installed_devices() if d in _CPU_DEVICES]
    tasks: dict[str, Any] = {}
    for kind, int8 in (("fp32", False), ("int8", True)):
        if kind not in variants and not (kind == "fp32" and "fp16" in variants):
            continue  # fp16 on a CPU is judged against the float32 peak
        for device in cpu_side:
            convs = peak_convs(int8=int8, threads=options.threads, device=device, model=model)
            for conv in convs:
                own = "model " if conv.shape == model else ""
                tasks[f"peak/{kind}/{device}/{own}{conv.shape.label}"] = conv
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
        if "peak_gops" in peak:
            each = ", ".join(f"{d} {g:.0f}" for d, g in peak["peak_gops_by_device"].items())
            lines.append(
                f"floor {variant}: {peak['gmac']:.1f} GMAC at the best measured peak of "
                f"{peak['peak_gops']:.0f} GOP/s ({each}) = {peak['floor_ms']:.1f} ms per image"
            )
        for key in ("instruction", "instruction_bf16"):
            if key in peak:
                u = peak[key]
                lines.append(
                    f"floor {variant} at the instruction level ({u['unit']}: "
                    f"{u['macs_per_cycle_per_core']} MAC/cycle x {u['cores']} cores x "
                    f"{u['clock_ghz']:g} GHz = {u['peak_gops']:.0f} GOP/s): "
                    f"{u['floor_ms']:.2f} ms per image"
                )
    cpu, clock = report.get("cpu"), report.get("clock")
    if cpu:
        load = report.get("load_average") or {}
        at = f", clock {clock['ghz']:g} GHz ({clock['source']})" if clock else ""
        lines.append(
            f"cpu: {cpu['model']}, {cpu['physical_cores']} cores{at}, flags "
            f"{' '.join(cpu['flags']) or 'none of note'}; load average before "
            f"{load.get('before')}, after {load.get('after')}"
        )
    return "\n".join(lines)
