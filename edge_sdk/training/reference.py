"""The reference for speed: a bundle's own float32 weights run by PyTorch eager, NCHW,
as the reference EfficientAD code runs its networks. `edge-ad bench` measures it in the
same run as the bundle's graphs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from edge_sdk.runtime.bundle import Bundle
from edge_sdk.training import networks
from edge_sdk.training.inference_graph import InferenceGraph

log = logging.getLogger(__name__)


def reference_module(bundle: Bundle) -> InferenceGraph | None:
    """The bundle's inference graph as a PyTorch module holding its float32 weights (eval
    mode, on the CPU); None when the graph's initializers do not map onto the networks (a
    graph not exported by edge-ad)."""
    arch = bundle.manifest.model.architecture
    graph = InferenceGraph(
        networks.teacher(arch),
        networks.student(arch),
        networks.autoencoder(),
        torch.zeros(384),
        torch.ones(384),
    )
    model = onnx.load_from_string(bundle.graph("fp32"))
    weights = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer
    }
    state = graph.state_dict()
    missing = [k for k in state if k not in weights]
    if missing:
        log.warning("no PyTorch reference: graph initializers lack %s", missing[:3])
        return None
    graph.load_state_dict({k: weights[k] for k in state})
    return graph.eval()


def torch_reference(
    bundle: Bundle, threads: int, *, device: str = "cpu"
) -> Callable[[np.ndarray], Any] | None:
    """The bundle's float32 weights in PyTorch eager (NCHW fp32) on `device` ("cpu" or
    "cuda"); None as for :func:`reference_module`. On a GPU each call copies the batch in
    and the maps out, as the engine does, so both are timed alike."""
    module = reference_module(bundle)
    if module is None:
        return None
    if threads:
        torch.set_num_threads(threads)
    graph = module.to(device)

    def run(batch: np.ndarray) -> Any:
        with torch.inference_mode():
            maps = graph(torch.from_numpy(batch).to(device))
            return tuple(m.cpu() for m in maps) if device != "cpu" else maps

    return run
