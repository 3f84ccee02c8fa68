"""An ONNX Runtime session built from a bundle, run on uint8 batches into buffers it owns.

The provider choice (`runtime/providers.py`) is made explicit: the engine reports the
provider it got, and a forced device that did not come up is an error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edge_sdk.errors import BundleError, EngineError, require
from edge_sdk.runtime.bundle import Bundle
from edge_sdk.runtime.manifest import ModelSpec
from edge_sdk.runtime.providers import (
    _CUDA,
    _TRT,
    DEVICES,
    Device,
    EngineOptions,
    _names,
    available_providers,
    open_session,
    provider_chain,
)

log = logging.getLogger(__name__)

__all__ = ["DEVICES", "Device", "Engine", "EngineOptions", "pick_variant"]


class Engine:
    """Runs a bundle's graph on a batch of uint8 NCHW RGB images, returning raw maps.

    Outputs are written into buffers the engine owns and reuses: copy what must outlive
    the next `run` call.
    """

    def __init__(
        self,
        session: Any,
        *,
        input_name: str,
        output_names: tuple[str, str],
        variant: str,
        input_hw: tuple[int, int],
        cuda_graph: bool = False,
    ) -> None:
        self.session = session
        self.cuda_graph = cuda_graph
        self.input_name = input_name
        self.output_names = output_names
        self.variant = variant
        self.input_hw = input_hw
        self.provider: str = session.get_providers()[0]
        self._bindings: dict[int, tuple[Any, np.ndarray, np.ndarray]] = {}
        self._device_buffers: dict[int, tuple[Any, Any, Any]] = {}
        self._graph_runs: dict[int, Any] = {}  # batch size -> RunOptions naming its graph
        self._map_hw: tuple[int, int] | None = None

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, options: EngineOptions | None = None, *, warmup: bool = True
    ) -> Engine:
        """Build a session for the bundle's graph (the variant that suits the device)."""
        options = options or EngineOptions()
        ort: Any = require("onnxruntime", extra="gpu", feature="the inference engine")
        chain = provider_chain(options.device, available_providers(ort), options)
        variant = options.variant or pick_variant(bundle, chain)
        return cls.from_graph(
            bundle.graph(variant),
            bundle.manifest.model,
            options,
            variant=variant,
            source=str(bundle.path),
            warmup=warmup,
        )

    @classmethod
    def from_graph(
        cls,
        graph: bytes,
        spec: ModelSpec,
        options: EngineOptions | None = None,
        *,
        variant: str = "fp32",
        source: str = "<graph>",
        warmup: bool = True,
    ) -> Engine:
        """Build a session for graph bytes and check them against the manifest's spec."""
        options = options or EngineOptions()
        session, cuda_graph = open_session(graph, options, variant=variant, source=source)
        engine = cls(
            session,
            input_name=spec.input.name,
            output_names=(spec.outputs.map_st, spec.outputs.map_ae),
            variant=variant,
            input_hw=(spec.input.height, spec.input.width),
            cuda_graph=cuda_graph,
        )
        engine.check_signature(source=source)
        log.info(
            "engine: %s graph on %s (providers %s)",
            variant,
            engine.provider,
            session.get_providers(),
        )
        if warmup:
            engine.warmup()
        return engine

    def check_signature(self, *, source: str) -> None:
        """Fail early when the graph does not take or return what the manifest says."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if self.input_name not in inputs:
            raise BundleError(
                f"{source}: model.input.name is {self.input_name!r}, but the "
                f"graph's inputs are {sorted(inputs)}"
            )
        node = inputs[self.input_name]
        if node.type != "tensor(uint8)":
            raise BundleError(
                f"{source}: model.input.dtype is uint8, but the graph's input "
                f"{node.name!r} is {node.type}"
            )
        shape = list(node.shape)
        expected = [3, *self.input_hw]
        if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] != expected:
            raise BundleError(
                f"{source}: model.input says [batch, {expected[0]}, "
                f"{expected[1]}, {expected[2]}], but the graph's input "
                f"{node.name!r} has shape {shape}"
            )
        for key, name in zip(("map_st", "map_ae"), self.output_names, strict=True):
            if name not in outputs:
                raise BundleError(
                    f"{source}: model.outputs.{key} is {name!r}, but the graph's "
                    f"outputs are {sorted(outputs)}"
                )

    def _bind_outputs(self, n: int, maps: list[np.ndarray]) -> None:
        """Output buffers for later runs at batch size `n`, shaped like `maps`."""
        binding = self.session.io_binding()
        out_st = np.empty_like(maps[0], dtype=np.float32)
        out_ae = np.empty_like(maps[1], dtype=np.float32)
        for name, buf in zip(self.output_names, (out_st, out_ae), strict=True):
            binding.bind_output(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
        self._bindings[n] = (binding, out_st, out_ae)

    def _device_binding(self, batch: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """CUDA graphs replay fixed GPU addresses: the input and both maps get GPU buffers
        of their own, allocated once per batch size; `run` copies in and out. Each batch
        size is captured as its own graph (ONNX Runtime's `gpu_graph_id`): a graph
        captured at one shape must never replay at another."""
        ort: Any = require("onnxruntime", extra="gpu", feature="CUDA graphs")
        n = batch.shape[0]
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        binding = self.session.io_binding()
        device_input = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
        binding.bind_ortvalue_input(self.input_name, device_input)
        host: list[np.ndarray] = []
        device: list[Any] = []
        for name in self.output_names:
            hw = shapes[name][2:]
            if not all(isinstance(d, int) for d in hw):
                raise EngineError(f"CUDA graphs need fixed map sizes; output {name} is {hw}")
            shape = [n, 1, *hw]
            device.append(ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0))
            binding.bind_ortvalue_output(name, device[-1])
            host.append(np.empty(shape, np.float32))
        self._device_buffers[n] = (device_input, device[0], device[1])
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("gpu_graph_id", str(n))
        self._graph_runs[n] = run_options
        self._bindings[n] = (binding, host[0], host[1])
        return self._bindings[n]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw maps (map_st, map_ae), each [N,1,h,w] float32, for a contiguous uint8 batch."""
        if batch.dtype != np.uint8 or batch.ndim != 4 or not batch.flags.c_contiguous:
            raise EngineError(
                f"engine input must be a C-contiguous uint8 [N,3,H,W] array, "
                f"got {batch.dtype} {batch.shape}"
            )
        n = batch.shape[0]
        if n not in self._bindings and not self.cuda_graph:
            # The first run at a batch size finds the map size (its result is the answer,
            # not a throw-away run); later runs at that size write into bound buffers.
            try:
                maps = self.session.run(list(self.output_names), {self.input_name: batch})
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise EngineError(
                    f"graph run failed ({self.variant} on {self.provider}): {exc}"
                ) from exc
            self._bind_outputs(n, maps)
            return maps[0], maps[1]
        if n not in self._bindings:
            self._device_binding(batch)
        binding, out_st, out_ae = self._bindings[n]
        device = self._device_buffers.get(n)
        try:
            if device is None:
                binding.bind_input(
                    self.input_name, "cpu", 0, np.uint8, list(batch.shape), batch.ctypes.data
                )
                self.session.run_with_iobinding(binding)
            else:
                device[0].update_inplace(batch)
                self.session.run_with_iobinding(binding, self._graph_runs[batch.shape[0]])
                out_st[...] = device[1].numpy()
                out_ae[...] = device[2].numpy()
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineError(
                f"graph run failed ({self.variant} on {self.provider}): {exc}"
            ) from exc
        return out_st, out_ae

    def warmup(self, *, runs: int = 2) -> float:
        """Run zeros through the graph so the first real part is not slow; returns ms."""
        h, w = self.input_hw
        zeros = np.zeros((1, 3, h, w), dtype=np.uint8)
        start = time.perf_counter()
        for _ in range(runs):
            self.run(zeros)
        return (time.perf_counter() - start) * 1e3 / runs


def pick_variant(bundle: Bundle, chain: list[Any]) -> str:
    """fp16 on a GPU provider, int8 on the CPU (either provider), each only if the bundle
    has it."""
    first = _names(chain)[0]
    have = set(bundle.variants())
    order = ["fp16", "fp32"] if first in (_TRT, _CUDA) else ["int8", "fp32"]
    for name in order:
        if name in have:
            return name
    return "fp32"
