"""Tiny hand-built ONNX graphs with the bundle's signature, for fault tests.

They are real ONNX graphs run by the real ONNX Runtime; they just compute something
cheap (or fail on purpose) instead of EfficientAD.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from edge_sdk.runtime.bundle import example_manifest, write_bundle


def _graph(nodes: list, *, extra_init: list | None = None) -> bytes:
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 3, 256, 256])
    outs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1, "h", "w"])
        for n in ("map_st", "map_ae")
    ]
    base = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("AveragePool", ["x"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("ReduceMean", ["pooled"], ["grey"], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(base + nodes, "tiny", [image], outs, initializer=extra_init or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def brightness_graph() -> bytes:
    """map_st = mean brightness per 4x4 cell (0..255), map_ae = zeros: 64x64 maps."""
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    return _graph(
        [
            helper.make_node("Identity", ["grey"], ["map_st"]),
            helper.make_node("Mul", ["grey", "zero"], ["map_ae"]),
        ],
        extra_init=[zero],
    )


def nan_graph() -> bytes:
    """map_ae = sqrt(-brightness): NaN for any image that is not black."""
    return _graph(
        [
            helper.make_node("Identity", ["grey"], ["map_st"]),
            helper.make_node("Neg", ["grey"], ["neg"]),
            helper.make_node("Sqrt", ["neg"], ["map_ae"]),
        ]
    )


def failing_graph() -> bytes:
    """Loads fine, fails at run time: 4096 values cannot be reshaped to [5, -1]."""
    shape = helper.make_tensor("bad_shape", TensorProto.INT64, [2], [5, -1])
    return _graph(
        [
            helper.make_node("Reshape", ["grey", "bad_shape"], ["map_st"]),
            helper.make_node("Identity", ["grey"], ["map_ae"]),
        ],
        extra_init=[shape],
    )


def write_tiny_bundle(
    path: Path, graph: bytes, *, threshold: float = 0.1, tiling: dict | None = None
) -> Path:
    """Brightness quantiles qa=100, qb=200 (st); threshold on the combined map; `tiling`:
    the manifest's model.input.tiling."""
    model: dict = {"architecture": "efficientad-s", "sha256": "0" * 64}
    normalization = {
        "st": {"qa": 100.0, "qb": 200.0},
        "ae": {"qa": 0.0, "qb": 1.0},
        "weights": {"st": 1.0, "ae": 0.0},
    }
    if tiling is not None:
        model["input"] = {"tiling": tiling}
        # The brightness map already covers the whole tile (EfficientAD's needs the pad).
        normalization["pad"] = 0
    manifest = example_manifest(
        name=path.stem,
        model=model,
        normalization=normalization,
        threshold={"image": threshold, "pixel": threshold},
    )
    return write_bundle(path, manifest, {"model.onnx": graph})
