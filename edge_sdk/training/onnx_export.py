"""Export an :class:`InferenceGraph` to the single-file float32 ONNX graph a bundle carries.

Uses the torch.export-based exporter (``dynamo=True``, the default since torch 2.9): it
traces with fake tensors (no real forward pass, so exporting M takes seconds), names the
dynamic batch dimension from ``dynamic_shapes``, and its optimiser leaves a flat graph
(Conv, Relu, AveragePool, Resize, a few elementwise ops; no Constant nodes, no Dropout).
The legacy TorchScript exporter also works but is deprecated and warns on every call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator

import onnx
import torch

from edge_sdk.errors import EdgeADError
from edge_sdk.training.inference_graph import InferenceGraph

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAMES = ("map_st", "map_ae")
# Ops that must never reach a deployed graph: their presence means eval mode was lost.
_TRAINING_OPS = frozenset({"Dropout", "BatchNormalization"})


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's notices (torchvision ops it skips, deprecations inside torch, the
    opset fallback it takes) are for torch's developers, not for a user training a model;
    `-vv` shows them."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [log.level for log in noisy]
    try:
        for log in noisy:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for log, level in zip(noisy, levels, strict=True):
            log.setLevel(level)


def export_onnx(
    graph: InferenceGraph,
    path: str | os.PathLike[str],
    *,
    height: int = 256,
    width: int = 256,
    opset: int = 17,
) -> None:
    """Write ``graph`` as ONNX to ``path``: input ``image`` uint8 [batch,3,height,width] RGB,
    outputs ``map_st`` and ``map_ae`` float32 [batch,1,h,w]; the batch dimension is dynamic.

    Opset 17 by default because TensorRT 8.5/8.6 (JetPack 5 edge boxes) parse at most 17;
    the exporter builds at 18 and converts down. Weights are stored inside the one file
    (M is about 80 MB, far below protobuf's 2 GB limit). The written file is re-read and
    validated with ``onnx.checker``.

    >>> import tempfile, pathlib, torch
    >>> from edge_sdk.training import networks as nets
    >>> g = InferenceGraph(nets.teacher("efficientad-s"), nets.student("efficientad-s"),
    ...                    nets.autoencoder(), torch.zeros(384), torch.ones(384))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     export_onnx(g, pathlib.Path(d) / "model.onnx")
    ...     sorted(p.name for p in pathlib.Path(d).iterdir())
    ['model.onnx']
    """
    path = os.fspath(path)
    graph = graph.eval()
    # Batch 2, not 1: torch.export specialises size-1 dimensions, which would pin the batch.
    sample = torch.zeros(2, 3, height, width, dtype=torch.uint8)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                graph,
                (sample,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types; keep the cause
        raise EdgeADError(
            f"exporting the inference graph to {path} at {height}x{width} failed "
            f"(the teacher and autoencoder maps must have the same size; 256x256 gives 56x56): "
            f"{exc}"
        ) from exc
    if program is None:  # only the legacy exporter returns None
        raise EdgeADError(f"torch.onnx.export returned no program for {path}")
    model = program.model_proto
    model.doc_string = (
        "EfficientAD raw maps. Input: uint8 RGB NCHW 0..255, resized only; scaling, ImageNet "
        "normalisation and the teacher's mean/std are folded into the graph."
    )
    _check(model, path, opset)
    onnx.save_model(model, path)
    # Re-read from disk: what a bundle ships is the file, not the in-memory proto.
    onnx.checker.check_model(path, full_check=True)
    logger.info(
        "exported %s (opset %d, %.1f MB, ops %s)",
        path,
        opset,
        os.path.getsize(path) / 1e6,
        dict(Counter(n.op_type for n in model.graph.node)),
    )


def _check(model: onnx.ModelProto, path: str, opset: int) -> None:
    versions = {o.domain: o.version for o in model.opset_import}
    if versions.get("", versions.get("ai.onnx")) != opset:
        # The exporter keeps its own opset when down-conversion fails, and says so only in a log.
        raise EdgeADError(f"{path}: expected ONNX opset {opset}, the exporter produced {versions}")
    found = sorted({n.op_type for n in model.graph.node} & _TRAINING_OPS)
    if found:
        raise EdgeADError(f"{path}: the exported graph contains training-only ops {found}")
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise EdgeADError(
            f"{path}: expected input {[INPUT_NAME]} and outputs {list(OUTPUT_NAMES)}, "
            f"found {inputs} and {outputs}"
        )
