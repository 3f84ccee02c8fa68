"""Execution providers: which ONNX Runtime providers exist, the order they are tried in,
their options, and the session built on them.

Providers are tried in the order TensorRT, CUDA, OpenVINO, CPU (`device="auto"`), or forced
with `device="cpu" | "openvino" | "cuda" | "tensorrt"`. ONNX Runtime silently falls back to
the CPU when a provider fails to load; a forced device that did not come up is an error here.

OpenVINO comes as ONNX Runtime's plugin execution provider (`pip install
'edge-ad[openvino]'`, the `onnxruntime-ep-openvino` wheel): on Intel CPUs its int8
convolutions use AMX or VNNI at close to the machine's peak, about twice as fast as ONNX
Runtime's own CPU kernels on the same QDQ graph.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from edge_sdk.errors import EngineError, require

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "openvino", "cuda", "tensorrt"]
DEVICES: tuple[str, ...] = get_args(Device)

_TRT = "TensorrtExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_OPENVINO = "OpenVINOExecutionProvider"
_CPU = "CPUExecutionProvider"
_OPENVINO_PLUGIN = "edge_ad_openvino"
# The TensorRT library that ONNX Runtime's TensorRT provider links against (ONNX Runtime
# 1.17 to 1.31: TensorRT 10). onnxruntime-gpu lists the provider even where TensorRT is
# missing, and then falls back to CUDA with an error banner on every session.
_TENSORRT_LIBRARIES = ("libnvinfer.so.10", "nvinfer_10.dll")
_INSTALL_HINT = {
    _OPENVINO: "install the OpenVINO plugin (pip install 'edge-ad[openvino]')",
    _CUDA: "install onnxruntime-gpu (pip install 'edge-ad[gpu]') and check the CUDA libraries",
    _TRT: (
        "install onnxruntime-gpu (pip install 'edge-ad[gpu]') and TensorRT 10 "
        f"({' or '.join(_TENSORRT_LIBRARIES)} on the library path, or pip install tensorrt)"
    ),
}


@dataclass(frozen=True)
class EngineOptions:
    """How to run the graph. `threads=0` lets ONNX Runtime use one thread per core."""

    device: Device = "auto"
    variant: str | None = None  # None: the best variant the bundle has for the device
    # The constraints are checked where the options are read from a file (line.yaml's
    # engine section); Python callers get what they pass.
    threads: Annotated[int, Field(ge=0)] = 0
    # Spinning threads burn the cores the camera and sinks need between frames.
    allow_spinning: bool = False
    # TensorRT engines are built on the first start (minutes) and reused from here after;
    # each graph gets its own subfolder named by its sha256, so a new bundle never loads a
    # stale engine built for other weights.
    trt_cache_dir: Path | None = None
    trt_fp16: bool = True
    # CUDA graphs: one captured launch per run instead of a kernel launch per node; inputs
    # and outputs then live in fixed GPU buffers. None: on for the CUDA provider, off for
    # TensorRT (not yet measured there). On an H200 (benchmarks/gpu_latency.py) they cut
    # EfficientAD-S fp16 from 1.5 to 1.0 ms, and without them one session that switched
    # between batch sizes 1 and 8 took 240 to 570 ms a run.
    cuda_graph: bool | None = None
    extra_session_config: dict[str, str] = field(default_factory=dict)


_openvino_registered: bool | None = None


def openvino_plugin_devices(ort: Any) -> list[Any]:
    """The OpenVINO plugin's CPU device (an `OrtEpDevice`), registering the plugin with
    ONNX Runtime once per process; empty when the plugin is not installed."""
    global _openvino_registered
    if _openvino_registered is None:
        try:
            import onnxruntime_ep_openvino as plugin

            ort.register_execution_provider_library(_OPENVINO_PLUGIN, plugin.get_library_path())
            _openvino_registered = True
        except Exception as exc:  # not installed, or an onnxruntime without plugin support
            log.debug("no OpenVINO plugin: %s", exc)
            _openvino_registered = False
    if not _openvino_registered:
        return []
    return [
        d
        for d in ort.get_ep_devices()
        if d.ep_name == _OPENVINO and d.ep_metadata.get("ov_device") == "CPU"
    ]


def _install_hint(provider: str) -> str:
    if provider == _OPENVINO and importlib.util.find_spec("onnxruntime_ep_openvino"):
        # Installed, yet no device: OpenVINO's CPU plugin enumerates Intel CPUs only.
        return (
            "the OpenVINO plugin is installed but offers no CPU device on this machine "
            "(its CPU device is for Intel CPUs; on others, e.g. AMD, it lists none): use "
            "--device cpu"
        )
    return _INSTALL_HINT[provider]


def available_providers(ort: Any) -> list[str]:
    """ONNX Runtime's built-in providers, plus OpenVINO when its plugin is installed, less
    TensorRT when its library is missing."""
    available = list(ort.get_available_providers())
    if _TRT in available and not tensorrt_loadable():
        available.remove(_TRT)
    if _OPENVINO not in available and openvino_plugin_devices(ort):
        available.insert(available.index(_CPU) if _CPU in available else 0, _OPENVINO)
    return available


def openvino_options(options: EngineOptions) -> dict[str, str]:
    """OpenVINO's CPU settings: latency over throughput, and float layers in float32.
    Without the precision hint, CPUs with AMX or AVX512-BF16 run them in bfloat16, a
    conversion no parity gate has checked; int8 layers stay int8 either way."""
    cpu = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if options.threads > 0:
        cpu["INFERENCE_NUM_THREADS"] = str(options.threads)
    return {"load_config": json.dumps({"CPU": cpu})}


def provider_chain(device: str, available: list[str], options: EngineOptions) -> list[Any]:
    """The providers to request from ONNX Runtime for `device`, best first."""
    if device not in DEVICES:
        raise EngineError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    cuda_opts: dict[str, str] = (
        {"enable_cuda_graph": "1"} if options.cuda_graph is not False else {}
    )
    trt_opts: dict[str, str] = {"trt_fp16_enable": "1" if options.trt_fp16 else "0"}
    if options.cuda_graph:
        trt_opts["trt_cuda_graph_enable"] = "1"
    if options.trt_cache_dir is not None:
        cache = str(Path(options.trt_cache_dir).expanduser().absolute())
        trt_opts.update({"trt_engine_cache_enable": "1", "trt_engine_cache_path": cache})
    wanted: dict[str, list[str]] = {
        # A GPU beats OpenVINO on the CPU; OpenVINO beats ONNX Runtime's CPU kernels.
        "auto": [_TRT, _CUDA, _OPENVINO, _CPU],
        "tensorrt": [_TRT, _CUDA, _CPU],
        "cuda": [_CUDA, _CPU],
        "openvino": [_OPENVINO, _CPU],
        "cpu": [_CPU],
    }
    chain: list[Any] = []
    for name in wanted[device]:
        if name not in available:
            if device != "auto" and name != _CPU and name == wanted[device][0]:
                raise EngineError(
                    f"device {device!r} needs {name}, but this onnxruntime offers only "
                    f"{available}: {_install_hint(name)}"
                )
            continue
        if device == "auto" and name == _OPENVINO and chain:
            continue  # a GPU provider leads; OpenVINO would take the nodes it leaves
        opts = {_TRT: trt_opts, _CUDA: cuda_opts, _OPENVINO: openvino_options(options)}.get(name)
        chain.append((name, opts) if opts else name)
    return chain


_tensorrt_loadable: bool | None = None


def tensorrt_loadable() -> bool:
    """Whether TensorRT's runtime library can be loaded (from the system's library path, or
    through the `tensorrt` wheel, which loads its own copy); checked once per process."""
    global _tensorrt_loadable
    if _tensorrt_loadable is None:
        _tensorrt_loadable = False
        with contextlib.suppress(Exception):
            import tensorrt  # noqa: F401  (loads libnvinfer from its wheel)

        for name in _TENSORRT_LIBRARIES:
            try:
                ctypes.CDLL(name)
            except OSError:
                continue
            _tensorrt_loadable = True
            break
        if not _tensorrt_loadable:
            log.debug("TensorRT not found (%s)", ", ".join(_TENSORRT_LIBRARIES))
    return _tensorrt_loadable


def trt_cache_folder(root: str | Path, graph: bytes) -> Path:
    """Where TensorRT keeps the engines of `graph`: one folder per graph, named by its sha256.
    ONNX Runtime's own cache key does not cover the weights of a graph loaded from bytes."""
    return Path(root).expanduser().absolute() / hashlib.sha256(graph).hexdigest()[:16]


def _names(chain: list[Any]) -> list[str]:
    return [c if isinstance(c, str) else c[0] for c in chain]


_cuda_preloaded = False


def preload_cuda_libraries(ort: Any) -> None:
    """Load the CUDA, cuBLAS and cuDNN libraries of the `nvidia-*` wheels (what
    `pip install onnxruntime-gpu[cuda,cudnn]` or PyTorch brings) before the first GPU
    session, once per process: without a system-wide CUDA the provider would not load.
    ONNX Runtime's own loader (1.21 and later) skips what PyTorch already loaded."""
    global _cuda_preloaded
    if _cuda_preloaded or not hasattr(ort, "preload_dlls"):
        return
    _cuda_preloaded = True
    try:
        ort.preload_dlls()
    except Exception as exc:  # then the system's libraries must do
        log.debug("onnxruntime.preload_dlls: %s", exc)


def _create_session(ort: Any, graph: bytes, so: Any, chain: list[Any]) -> Any:
    """An InferenceSession for `chain`; a plugin provider is attached to the session
    options by device, as ONNX Runtime requires, instead of being named."""
    first = _names(chain)[0]
    if first in (_TRT, _CUDA):
        preload_cuda_libraries(ort)
    plugin = openvino_plugin_devices(ort) if first == _OPENVINO else []
    if plugin:
        so.add_provider_for_devices(plugin, chain[0][1])
        return ort.InferenceSession(graph, sess_options=so)
    return ort.InferenceSession(graph, sess_options=so, providers=chain)


def create_session(
    graph: bytes, options: EngineOptions, *, variant: str = "fp32", source: str = "<graph>"
) -> Any:
    """An ONNX Runtime session for `graph` on `options.device`; a forced device that did
    not come up raises :class:`EngineError`."""
    return open_session(graph, options, variant=variant, source=source)[0]


def _captures_graphs(chain: list[Any], provider: str) -> bool:
    opts = dict(c for c in chain if not isinstance(c, str)).get(provider, {})
    return "1" in (opts.get("enable_cuda_graph"), opts.get("trt_cuda_graph_enable"))


def open_session(
    graph: bytes, options: EngineOptions, *, variant: str = "fp32", source: str = "<graph>"
) -> tuple[Any, bool]:
    """:func:`create_session`, and whether the session captures CUDA graphs (then its
    inputs and outputs must sit in fixed GPU buffers)."""
    ort: Any = require("onnxruntime", extra="gpu", feature="the inference engine")
    if options.trt_cache_dir is not None:
        options = replace(options, trt_cache_dir=trt_cache_folder(options.trt_cache_dir, graph))
    chain = provider_chain(options.device, available_providers(ort), options)
    if options.trt_cache_dir is not None and _TRT in _names(chain):
        options.trt_cache_dir.mkdir(parents=True, exist_ok=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if options.allow_spinning else "0"
    )
    for key, value in options.extra_session_config.items():
        so.add_session_config_entry(key, value)
    try:
        try:
            session = _create_session(ort, graph, so, chain)
        except Exception as exc:
            if options.cuda_graph is not None or _CUDA not in _names(chain):
                raise
            # A graph ONNX Runtime cannot capture (control flow, say): run it without.
            log.warning("no CUDA graphs for %s (%s); running without them", source, exc)
            plain = replace(options, cuda_graph=False)
            chain = provider_chain(options.device, available_providers(ort), plain)
            session = _create_session(ort, graph, so, chain)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise EngineError(
            f"{source}: ONNX Runtime cannot load graph variant {variant!r}: {exc}"
        ) from exc
    used = session.get_providers()
    wanted_first = _names(chain)[0]
    if options.device != "auto" and used[0] != wanted_first:
        raise EngineError(
            f"device {options.device!r} was requested but ONNX Runtime fell back to "
            f"{used[0]} (see its log above for why {wanted_first} failed)"
        )
    return session, _captures_graphs(chain, used[0])
