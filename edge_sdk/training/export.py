"""Trained networks -> ONNX graph -> calibrated bundle.

Calibration runs the exported graph itself through ONNX Runtime, so the quantiles and
threshold in the manifest are those of exactly what the line will run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from edge_sdk import __version__
from edge_sdk.calibration.quantiles import calibrate
from edge_sdk.runtime.bundle import sha256_hex, write_bundle
from edge_sdk.runtime.engine import Engine, EngineOptions
from edge_sdk.runtime.manifest import InputSpec, Manifest, MapWeights, ModelSpec
from edge_sdk.runtime.tiling import Tiling
from edge_sdk.training.inference_graph import InferenceGraph
from edge_sdk.training.onnx_export import export_onnx

if TYPE_CHECKING:
    from edge_sdk.runtime.manifest import ResizeMode


def graph_bytes(graph: InferenceGraph, *, height: int = 256, width: int = 256) -> bytes:
    """The ONNX graph of `graph` as bytes (written through a temporary file)."""
    with tempfile.TemporaryDirectory(prefix="edge-ad-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(graph, path, height=height, width=width)
        return path.read_bytes()


def export_bundle(
    out: str | Path,
    *,
    architecture: Literal["efficientad-s", "efficientad-m"],
    teacher: nn.Sequential,
    student: nn.Sequential,
    autoencoder: nn.Module,
    teacher_mean: torch.Tensor,
    teacher_std: torch.Tensor,
    calibration_images: Iterable[np.ndarray],
    name: str,
    description: str = "",
    calibration_source: str = "",
    target_frr: float = 0.01,
    training: dict[str, Any] | None = None,
    height: int = 256,
    width: int = 256,
    resize: ResizeMode = "area",
    tiling: Tiling | None = None,
    overwrite: bool = False,
    weights: MapWeights | None = None,
) -> Path:
    """Export the networks and write a bundle calibrated on held-out good images.

    ``resize`` must be the mode the networks were trained with: calibration uses it, and
    the manifest tells the runtime to; so must ``tiling``, with which the networks saw
    tiles (calibration then scores each image as the Inspector will, from its tiles).
    ``weights``: the two maps' weights (default the reference's half and half).
    """
    graph = InferenceGraph(teacher, student, autoencoder, teacher_mean, teacher_std)
    onnx_bytes = graph_bytes(graph, height=height, width=width)
    spec = ModelSpec(
        architecture=architecture,
        sha256=sha256_hex(onnx_bytes),
        input=InputSpec(height=height, width=width, resize=resize, tiling=tiling),
    )
    engine = Engine.from_graph(onnx_bytes, spec, EngineOptions(device="cpu"), warmup=False)
    # Disjoint images for quantiles and threshold where there are enough (split_indices).
    norm, threshold, record = calibrate(
        engine,
        calibration_images,
        resize=resize,
        target_frr=target_frr,
        source=calibration_source,
        split=True,
        weights=weights,
        tiling=tiling,
    )
    manifest = Manifest(
        name=name,
        created_by=f"edge-ad {__version__}",
        description=description,
        model=spec,
        normalization=norm,
        threshold=threshold,
        calibration=record,
        training=training or {},
    )
    return write_bundle(out, manifest, {spec.file: onnx_bytes}, overwrite=overwrite)
