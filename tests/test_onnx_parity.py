"""ONNX Runtime runs the exported graph like PyTorch runs the InferenceGraph.

Both architectures, random seeded weights, batch sizes other than the one used at export
time (2), so that the dynamic batch dimension is exercised.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("onnx", reason="the training extra is not installed")

import onnx
import onnxruntime as ort
import torch

from edge_sdk.training import networks as nets
from edge_sdk.training.inference_graph import InferenceGraph
from edge_sdk.training.onnx_export import export_onnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=nets.ARCHITECTURES)
def exported(request, tmp_path_factory) -> tuple[str, InferenceGraph, Path]:
    arch = request.param
    torch.manual_seed(0)
    # Teacher statistics far from (0, 1), so a fold that dropped them would show.
    mean = torch.randn(384) * 0.05
    std = torch.rand(384) * 0.05 + 0.01
    graph = InferenceGraph(nets.teacher(arch), nets.student(arch), nets.autoencoder(), mean, std)
    path = tmp_path_factory.mktemp(arch) / "model.onnx"
    export_onnx(graph, path)
    return arch, graph, path


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _compare(session: ort.InferenceSession, graph: InferenceGraph, batch: int) -> None:
    image = np.random.default_rng(batch).integers(0, 256, (batch, 3, 256, 256), dtype=np.uint8)
    ort_maps = session.run(None, {"image": image})
    with torch.no_grad():
        torch_maps = [m.numpy() for m in graph(torch.from_numpy(image))]
    for got, want in zip(ort_maps, torch_maps, strict=True):
        assert got.dtype == np.float32 and got.shape == (batch, 1, 56, 56)
        # Maps that vary by far more than the tolerance, or the comparison proves nothing.
        assert np.ptp(want) > 0.01 * np.abs(want).max() > 0
        # Different conv algorithms sum in different orders: float32 rounding, relative to
        # the map's scale (map_ae is ~1e-3 with random weights, map_st ~1).
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_graph_file(exported) -> None:
    _, _, path = exported
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no external data
    model = onnx.load(path)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert "Dropout" not in ops
    assert ops["Resize"] == 7 and ops["Conv"] == (22 if "-s" in path.parent.name else 26)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (image,) = model.graph.input
    assert image.name == "image"
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 256, 256]
    assert [o.name for o in model.graph.output] == ["map_st", "map_ae"]
    for output in model.graph.output:
        assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


# Any batch size but the export's 2 shows a batch baked into the graph; M (~118 GMAC per
# image) runs one image to keep the suite fast on a 2-core CPU.
BATCH_SIZES = {"efficientad-s": (1, 3), "efficientad-m": (1,)}


def test_onnxruntime_matches_torch(exported) -> None:
    arch, graph, path = exported
    session = _session(path)
    for batch in BATCH_SIZES[arch]:
        _compare(session, graph, batch)
