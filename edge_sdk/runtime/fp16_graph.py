"""The fp16 graph for GPUs: convolutions in fp16, the map arithmetic after them in
float32, so that the sums of squared differences neither lose bits nor overflow."""

from __future__ import annotations

from typing import Any

from edge_sdk.errors import EdgeADError, require

# The layers that run in fp16; everything else (the squared teacher-student and
# autoencoder differences, their channel sums, the decoder's Resize) stays float32: a sum
# of 384 squared differences is where fp16 loses bits, and the large differences that
# defects produce would overflow it (65504) before the division by 384. On the CPU, whose
# kernels widen fp16 internally, both splits score alike (trained magnetic-tile S: largest
# map difference 0.00063); on a GPU that is up to the provider's kernels.
FP16_OPS = frozenset({"Conv", "Relu", "AveragePool", "MaxPool"})


def convert_fp16(graph: bytes) -> bytes:
    """The fp16 graph for GPUs: the convolutions in fp16, the map arithmetic after them in
    float32 (see :data:`FP16_OPS`); the uint8 input and float32 outputs are kept."""
    onnx: Any = require("onnx", extra="train", feature="fp16 conversion")
    f16: Any = require("onnxruntime.transformers.float16", extra="train", feature="fp16 conversion")
    model = onnx.load_from_string(graph)
    keep_fp32 = sorted({n.op_type for n in model.graph.node} - FP16_OPS)
    originals = {i.name: i for i in model.graph.initializer}  # before conversion
    converted = f16.convert_float_to_float16(
        onnx.load_from_string(graph), keep_io_types=True, op_block_list=keep_fp32
    )
    return bytes(drop_fp16_round_trips(converted, originals).SerializeToString())


def drop_fp16_round_trips(model: Any, originals: dict[str, Any]) -> Any:
    """Remove each Cast(fp16) -> Cast(fp32) pair between two float32 nodes (in place), and
    give float32 nodes their constants in float32 again (`originals`: the float32 graph's
    initializers by name).

    The converter casts every kept-float32 node's output to fp16 and back before the next
    kept node, which would round the squared differences and their sums to fp16 anyway
    (and overflow them); without the pair, float32 flows straight through. It also stores
    the constants of kept nodes (the 1/384 of the channel mean, say) in fp16."""
    from onnx import TensorProto

    inits = {i.name for i in model.graph.initializer}
    widened = [
        n
        for n in model.graph.node
        if n.op_type == "Cast"
        and n.input[0] in inits
        and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)
        and n.input[0] in originals
        and originals[n.input[0]].data_type == TensorProto.FLOAT
    ]
    for node in widened:
        restored = model.graph.initializer.add()
        restored.CopyFrom(originals[node.input[0]])
        restored.name = node.output[0]
        model.graph.node.remove(node)
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    outputs = {o.name for o in model.graph.output}

    def cast_to(node: Any) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((int(a.i) for a in node.attribute if a.name == "to"), None)

    rename: dict[str, str] = {}
    dropped: list[Any] = []
    for node in nodes:
        first = producer.get(node.input[0]) if node.input else None
        if cast_to(node) != TensorProto.FLOAT or first is None:
            continue
        if cast_to(first) != TensorProto.FLOAT16 or first.input[0] not in producer:
            continue
        source = producer[first.input[0]]
        if source.op_type in FP16_OPS or cast_to(source) == TensorProto.FLOAT16:
            continue  # an fp16 value: this Cast is a real widening
        if node.output[0] in outputs:
            node.op_type, node.input[0] = "Identity", first.input[0]
            del node.attribute[:]
        else:
            rename[node.output[0]] = first.input[0]
            dropped.append(node)
    for node in dropped:
        model.graph.node.remove(node)
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    used = {i for n in model.graph.node for i in n.input} | outputs
    for node in [n for n in model.graph.node if cast_to(n) == TensorProto.FLOAT16]:
        if node.output[0] not in used:
            model.graph.node.remove(node)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    _sort_topologically(model.graph)
    return model


def _sort_topologically(graph: Any) -> None:
    """Order the nodes so each comes after its inputs' producers, as ONNX requires (the
    converter appends its casts at the end, which only ONNX Runtime forgives)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        runnable = [n for n in pending if all(i in ready for i in n.input)]
        if not runnable:
            raise EdgeADError("fp16 conversion produced a graph with a cycle")
        for node in runnable:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if n not in runnable]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
