"""EfficientAD-S and -M on a GPU, everything in one interleaved run.

- ONNX Runtime's CUDA provider through the product's own Engine (host buffers in and
  out, as the Inspector uses it): fp32 and fp16, with and without CUDA graphs, batch 1
  and 8;
- the reference, PyTorch on the same GPU: eager fp32 (as the reference EfficientAD code
  runs), eager fp16 (autocast) and fp16 replayed from one captured CUDA graph (about the
  best PyTorch does without a compiler); each copies the batch in and the maps out, as the
  engine does;
- engine start: a fresh process (no PyTorch) that opens a CUDA session, then the same
  again, the way a service restart would;
- TensorRT, if its libraries are present: engine build on the first start, cache reuse on
  the second;
- the fp16 parity gate on the GPU, and the Inspector end to end on a 2448x2048 mono frame.

Random weights (speed does not depend on them). Prints a table; writes JSON to --out.

    python benchmarks/gpu_latency.py --out benchmarks/results --models s,m
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ARCH = {"s": "efficientad-s", "m": "efficientad-m"}
PROBES = ("cuda_first", "cuda_again", "cuda_graph", "tensorrt_first", "tensorrt_cached")

# Measured in a fresh process: what a service (re)start pays before the first part.
START_PROBE = r"""
import sys, time, json
t0 = time.perf_counter()
from edge_sdk import Bundle, Inspector
opts = json.loads(sys.argv[3])
t1 = time.perf_counter()
ins = Inspector.open(Bundle.open(sys.argv[1]), device=sys.argv[2], warmup=False, **opts)
t2 = time.perf_counter()
import numpy as np
ins.inspect(np.zeros((256, 256), np.uint8))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_part_s": t3 - t2,
                  "provider": ins.provider, "variant": ins.engine.variant}))
"""


def start_probe(bundle: Path, device: str, **options: Any) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", START_PROBE, str(bundle), device, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-3:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def torch_models(bundle: Any) -> dict[str, Callable[[np.ndarray], Any]]:
    """PyTorch on the GPU from the bundle's fp32 weights: eager fp32, eager fp16
    (autocast), and fp16 replayed from a captured CUDA graph."""
    import torch

    from edge_sdk.training.reference import reference_module, torch_reference

    eager = torch_reference(bundle, 0, device="cuda")  # the product's own reference
    module = reference_module(bundle)
    assert eager is not None and module is not None
    module = module.cuda()

    def fp16(batch: np.ndarray) -> Any:
        with torch.inference_mode(), torch.autocast("cuda", torch.float16):
            maps = module(torch.from_numpy(batch).cuda())
        return tuple(m.float().cpu() for m in maps)

    static_in = torch.zeros((1, 3, 256, 256), dtype=torch.uint8, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            with torch.autocast("cuda", torch.float16, cache_enabled=False):
                module(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    cuda_graph = torch.cuda.CUDAGraph()
    with (
        torch.inference_mode(),
        torch.cuda.graph(cuda_graph),
        torch.autocast("cuda", torch.float16, cache_enabled=False),
    ):
        static_out = tuple(m.float() for m in module(static_in))

    def fp16_graph(batch: np.ndarray) -> Any:
        static_in.copy_(torch.from_numpy(batch))
        cuda_graph.replay()
        return tuple(m.cpu() for m in static_out)

    return {"torch-eager/fp32": eager, "torch-eager/fp16": fp16, "torch-cudagraph/fp16": fp16_graph}


def measure(tasks: dict[str, Callable[[], Any]], rounds: int) -> dict[str, dict[str, float]]:
    for task in tasks.values():
        for _ in range(5):
            task()
    times: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(rounds):
        for key, task in tasks.items():
            t0 = time.perf_counter()
            task()
            times[key].append((time.perf_counter() - t0) * 1e3)
    return {
        k: {"p50": statistics.median(v), "p99": float(np.percentile(v, 99)), "min": min(v)}
        for k, v in times.items()
    }


def guarded(out: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """Run one section; a failure is recorded under `key` and the run goes on."""
    try:
        out[key] = fn()
    except Exception as exc:
        out[key] = {"error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc()
    return out[key]


def run_model(model: str, folder: Path, rounds: int, probes: tuple[str, ...]) -> dict[str, Any]:
    import torch
    from inspector_overhead import random_bundle

    from edge_sdk import Bundle, EngineOptions, Inspector
    from edge_sdk.errors import EdgeADError
    from edge_sdk.runtime.engine import Engine
    from edge_sdk.runtime.variants import add_variant
    from edge_sdk.tools.synthetic import good_part

    out: dict[str, Any] = {"architecture": ARCH[model]}
    t0 = time.perf_counter()
    fp32_path = random_bundle(folder, ARCH[model])
    rng = np.random.default_rng(1)
    good = [good_part(rng) for _ in range(8)]
    path, gate = add_variant(
        fp32_path, folder / f"{model}-fp16.bundle", kind="fp16", good=good, allow_flips=True
    )
    out["build_s"] = time.perf_counter() - t0
    out["fp16_gate"] = gate
    bundle = Bundle.open(path)
    spec = bundle.manifest.model

    trt_cache = folder / "trt-cache"
    probe_args: dict[str, tuple[str, dict[str, Any]]] = {
        "cuda_first": ("cuda", {}),
        "cuda_again": ("cuda", {}),
        "cuda_graph": ("cuda", {"cuda_graph": True}),
        "tensorrt_first": ("tensorrt", {"trt_cache_dir": str(trt_cache)}),
        "tensorrt_cached": ("tensorrt", {"trt_cache_dir": str(trt_cache)}),
    }
    out["start"] = {k: start_probe(path, probe_args[k][0], **probe_args[k][1]) for k in probes}

    rng = np.random.default_rng(0)
    batch8 = rng.integers(0, 256, (8, 3, 256, 256), dtype=np.uint8)
    batch1 = np.ascontiguousarray(batch8[:1])
    engines: dict[str, Engine] = {}
    for variant in ("fp32", "fp16"):
        for graph in (False, True):
            name = f"ort-cuda{'+graph' if graph else ''}/{variant}"
            options = EngineOptions(device="cuda", cuda_graph=graph)
            try:
                engines[name] = Engine.from_graph(
                    bundle.graph(variant), spec, options, variant=variant
                )
            except EdgeADError as exc:
                out.setdefault("errors", {})[name] = str(exc)

    def latency() -> dict[str, Any]:
        tasks: dict[str, Callable[[], Any]] = {}
        for name, engine in engines.items():
            tasks[f"{name}/batch1"] = lambda e=engine: e.run(batch1)
            if name.endswith("fp16"):
                tasks[f"{name}/batch8"] = lambda e=engine: e.run(batch8)
        try:
            for name, fn in torch_models(bundle).items():
                tasks[f"{name}/batch1"] = lambda fn=fn: fn(batch1)
        except Exception as exc:
            out.setdefault("errors", {})["torch"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        return measure(tasks, rounds)

    guarded(out, "latency_ms", latency)

    def agreement() -> dict[str, float]:
        # fp16 and fp32 graphs on the GPU against the fp32 graph on the CPU, random pixels.
        cpu = Engine.from_graph(bundle.graph("fp32"), spec, EngineOptions(device="cpu"))
        ref = [m.copy() for m in cpu.run(batch8)]
        diffs = {}
        for name, engine in engines.items():
            got = engine.run(batch8)
            diffs[name] = max(
                float(np.max(np.abs(g - r)) / (np.max(np.abs(r)) + 1e-12))
                for g, r in zip(got, ref, strict=True)
            )
        return diffs

    guarded(out, "max_map_difference_vs_cpu_fp32_relative", agreement)

    def line() -> dict[str, Any]:
        # The Inspector end to end, as a line runs it, on a 5 MP mono frame.
        frame = rng.integers(0, 256, (2048, 2448), dtype=np.uint8)
        result: dict[str, Any] = {}
        for graph in (False, True):
            ins = Inspector.open(bundle, engine=EngineOptions(device="cuda", cuda_graph=graph))
            totals, infers = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                r = ins.inspect(frame)
                totals.append((time.perf_counter() - t0) * 1e3)
                infers.append(r.latency.infer_ms)
            result[f"cuda{'+graph' if graph else ''}/{ins.engine.variant}"] = {
                "total_p50_ms": statistics.median(totals),
                "infer_p50_ms": statistics.median(infers),
                "total_p99_ms": float(np.percentile(totals, 99)),
                "ratio": statistics.median(totals) / statistics.median(infers),
            }
            ins.close()
        return result

    guarded(out, "inspector_2448x2048", line)

    def bench() -> dict[str, Any]:
        # `edge-ad bench --device cuda`: the product's own benchmark, PyTorch on the GPU as
        # its reference.
        from edge_sdk.tools.bench import BenchOptions, run_bench

        return run_bench(str(path), BenchOptions(devices=("cuda",), rounds=50))

    guarded(out, "edge_ad_bench", bench)
    engines.clear()
    torch.cuda.empty_cache()
    return out


def gpu_info() -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    smi = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm",
            "--format=csv,noheader",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "gpu": torch.cuda.get_device_name(0),
        "nvidia_smi": smi,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="s,m")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    report: dict[str, Any] = {"env": gpu_info(), "rounds": args.rounds, "models": {}}
    print(json.dumps(report["env"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "gpu_latency.json"
    with tempfile.TemporaryDirectory() as tmp:
        for k, model in enumerate(args.models.split(",")):
            # Service starts are probed on the first model only (each is a fresh process).
            probes = tuple(PROBES) if k == 0 else ("cuda_first",)
            folder = Path(tmp) / model
            folder.mkdir()
            guarded(
                report["models"],
                model,
                lambda m=model, f=folder, p=probes: run_model(m, f, args.rounds, p),
            )
            target.write_text(json.dumps(report, indent=2, default=str))  # partial results
            try:
                print_model(report["models"][model])
            except Exception:
                print(json.dumps(report["models"][model], indent=1, default=str))
    print(f"wrote {target}")


def print_model(m: dict[str, Any]) -> None:
    print(f"\n{m['architecture']}: build {m['build_s']:.1f} s")
    ref = m["latency_ms"].get("torch-eager/fp32/batch1", {}).get("p50")
    print(f"{'row':<34}{'p50 ms':>9}{'p99 ms':>9}{'ms/img':>9}{'x torch fp32':>14}")
    for name, t in m["latency_ms"].items():
        n = int(name.rsplit("batch", 1)[1])
        x = f"{ref / (t['p50'] / n):14.2f}" if ref else ""
        print(f"{name:<34}{t['p50']:9.3f}{t['p99']:9.3f}{t['p50'] / n:9.3f}{x}")
    for name, s in m["start"].items():
        print(f"start {name}: {s}")
    print(
        "gate:",
        {
            k: m["fp16_gate"].get(k)
            for k in ("checked_on", "max_map_difference", "verdict_flips", "not_checked_on")
        },
    )
    print("map diff vs cpu fp32 (relative):", m["max_map_difference_vs_cpu_fp32_relative"])
    print("inspector 2448x2048:", m["inspector_2448x2048"])
    print("errors:", m.get("errors"))


if __name__ == "__main__":
    main()
