"""What this machine can do at best, measured in the same run as the model: the
throughput of one large, kernel-friendly convolution (fp32, and int8 in the QDQ form the
int8 variant uses) on each CPU provider. A model's floor is its multiply-accumulates at the
fastest provider's rate; `edge-ad bench` reports how far the real graph is from it.

A provider's peak is a property of its kernels as much as of the silicon: on a CPU with AMX,
OpenVINO's int8 convolutions run about twice as fast as ONNX Runtime's VNNI kernels, so the
floor is taken from the best provider installed, never from the one being judged.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_sdk.errors import require

# Square 3x3 convolutions (channels, spatial size): the best of them is the peak. One shape
# is not enough: OpenVINO's AMX kernels reached 2.0 TOP/s on the first and 2.7 on the third
# in one run, where ONNX Runtime's VNNI kernels do best on the first.
SHAPES: tuple[tuple[int, int], ...] = ((256, 64), (384, 96), (512, 64))
_K = 3


@dataclass(frozen=True)
class ConvShape:
    """One convolution of a graph at batch 1: channels in and out, square kernel, the
    input's spatial size, padding and stride."""

    cin: int
    cout: int
    k: int
    h: int
    w: int
    pad: int = 0
    stride: int = 1

    @property
    def macs(self) -> int:
        oh = (self.h + 2 * self.pad - self.k) // self.stride + 1
        ow = (self.w + 2 * self.pad - self.k) // self.stride + 1
        return oh * ow * self.cout * self.cin * self.k * self.k

    @property
    def label(self) -> str:
        return f"{self.cin}->{self.cout} k{self.k} {self.h}x{self.w}"


def graph_convs(graph: bytes) -> list[ConvShape]:
    """Every plain (ungrouped, square-kernel) convolution of a graph at batch 1."""
    onnx: Any = require("onnx", extra="train", feature="counting a graph's operations")
    model = onnx.load_from_string(graph)
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]
    }
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        x, weight = shapes.get(node.input[0]), weights.get(node.input[1])
        attrs = {a.name: list(a.ints) or a.i for a in node.attribute}
        if not x or not weight or 0 in x or len(x) != 4 or weight[2] != weight[3]:
            continue
        pads, strides = attrs.get("pads", [0]), attrs.get("strides", [1])
        if attrs.get("group", 1) not in (0, 1) or len(set(pads)) > 1 or len(set(strides)) > 1:
            continue
        out.append(ConvShape(x[1], weight[0], weight[2], x[2], x[3], pads[0], strides[0]))
    return out


def conv_macs(graph: bytes) -> int:
    """Multiply-accumulates of every convolution for one image (batch 1)."""
    return sum(c.macs for c in graph_convs(graph))


def largest_conv(graph: bytes) -> ConvShape | None:
    """The graph's convolution with the most multiply-accumulates: the shape a model's own
    peak is measured on."""
    return max(graph_convs(graph), key=lambda c: c.macs, default=None)


def _conv_graph(int8: bool, shape: ConvShape) -> bytes:
    require("onnx", extra="train", feature="measuring the machine's peak")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c, k = shape.cout, shape.k
    w = rng.normal(0, 0.05, (c, shape.cin, k, k)).astype(np.float32)
    nodes, inits = [], []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, shape.cin, shape.h, shape.w])
    conv: dict[str, Any] = {"pads": [shape.pad] * 4, "strides": [shape.stride] * 2}
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if int8:
        scale_w = (np.abs(w).reshape(c, -1).max(axis=1) / 127).astype(np.float32)
        q_w = np.round(w / scale_w[:, None, None, None]).astype(np.int8)
        inits += [
            numpy_helper.from_array(q_w, "w_q"),
            numpy_helper.from_array(scale_w, "w_s"),
            numpy_helper.from_array(np.zeros(c, np.int8), "w_z"),
            numpy_helper.from_array(np.array(0.02, np.float32), "a_s"),
            numpy_helper.from_array(np.array(128, np.uint8), "a_z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "a_s", "a_z"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "a_s", "a_z"], ["xd"]),
            helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0),
            # Conv straight into Q: the pattern ONNX Runtime fuses into QLinearConv (the
            # quantizer folds a following Relu into the output range the same way).
            helper.make_node("Conv", ["xd", "w"], ["c"], **conv),
            helper.make_node("QuantizeLinear", ["c", "a_s", "a_z"], ["rq"]),
            helper.make_node("DequantizeLinear", ["rq", "a_s", "a_z"], ["y"]),
        ]
    else:
        inits.append(numpy_helper.from_array(w, "w"))
        nodes += [
            helper.make_node("Conv", ["x", "w"], ["c"], **conv),
            helper.make_node("Relu", ["c"], ["y"]),
        ]
    graph = helper.make_graph(nodes, "peak", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


class PeakConv:
    """One convolution (a reference shape of :data:`SHAPES`, or a model's own) ready to run
    on a provider; `run()` times nothing, so a benchmark can interleave it with the model's
    rounds."""

    def __init__(
        self, *, int8: bool, shape: ConvShape, threads: int = 0, device: str = "cpu"
    ) -> None:
        from edge_sdk.runtime.providers import EngineOptions, create_session

        options = EngineOptions(device=device, threads=threads)  # type: ignore[arg-type]
        graph = _conv_graph(int8, shape)
        self.session = create_session(graph, options, source="peak convolution")
        size = (1, shape.cin, shape.h, shape.w)
        self.x = np.random.default_rng(1).random(size, dtype=np.float32)
        self.shape = shape
        self.macs = shape.macs

    def run(self) -> None:
        self.session.run(None, {"x": self.x})

    def gops(self, median_s: float) -> float:
        """GOP/s (2 operations per multiply-accumulate) at a median time per run."""
        return 2 * self.macs / median_s / 1e9


def reference_shapes() -> list[ConvShape]:
    """The square 3x3 convolutions of :data:`SHAPES`."""
    return [ConvShape(c, c, _K, hw, hw, pad=1) for c, hw in SHAPES]


def peak_convs(
    *, int8: bool, threads: int = 0, device: str = "cpu", model: ConvShape | None = None
) -> list[PeakConv]:
    """The reference convolutions of :data:`SHAPES` on `device` ("cpu" or "openvino"), and
    the model's own largest convolution when given."""
    shapes = reference_shapes() + ([model] if model is not None else [])
    return [PeakConv(int8=int8, shape=s, threads=threads, device=device) for s in shapes]


def measure_peak(
    *, int8: bool, threads: int = 0, rounds: int = 15, device: str = "cpu"
) -> dict[str, float]:
    """GOP/s of the fastest reference convolution (:data:`SHAPES`, median of `rounds`
    each) on `device`. `edge-ad bench` runs the same convolutions interleaved with the model
    instead, so a machine whose speed drifts (a shared host) moves both alike."""
    best: dict[str, float] = {"gops": 0.0}
    for conv in peak_convs(int8=int8, threads=threads, device=device):
        for _ in range(3):
            conv.run()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            conv.run()
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        if conv.gops(median) > best["gops"]:
            best = {"gops": conv.gops(median), "median_ms": median * 1e3, "gmac": conv.macs / 1e9}
            best.update(channels=conv.shape.cout, size=conv.shape.h)
    return best
