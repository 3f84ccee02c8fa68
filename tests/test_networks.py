"""The EfficientAD networks, the folded inference graph and teacher weight loading.

Random weights throughout (no trained model is needed to test shapes and algebra);
PyTorch's default init already gives non-trivial maps.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the training extra is not installed")

import torch

from edge_sdk.errors import EdgeADError
from edge_sdk.training import networks as nets
from edge_sdk.training.inference_graph import (
    InferenceGraph,
    normalise,
    reference_maps,
)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch", nets.ARCHITECTURES)
def test_output_shapes_at_256(arch: str) -> None:
    # Meta tensors: shapes without the ~120 GMAC of an M forward pass.
    with torch.device("meta"):
        x = torch.empty(2, 3, 256, 256)
        assert nets.teacher(arch)(x).shape == (2, 384, 56, 56)
        assert nets.student(arch)(x).shape == (2, 768, 56, 56)
        assert nets.autoencoder()(x).shape == (2, 384, 56, 56)


def test_parameter_counts() -> None:
    # Counted from the layer table in docs/architecture.md; a changed layer changes these.
    assert _params(nets.teacher("efficientad-s")) == 2_694_144
    assert _params(nets.student("efficientad-s")) == 4_267_392
    assert _params(nets.teacher("efficientad-m")) == 8_026_624
    assert _params(nets.student("efficientad-m")) == 11_615_488
    assert _params(nets.autoencoder()) == 1_096_320


def test_reference_layer_indices() -> None:
    # The published teacher_small.pth / teacher_medium.pth use exactly these keys.
    assert list(nets.pdn_small(384).state_dict()) == [
        f"{i}.{p}" for i in (0, 3, 6, 8) for p in ("weight", "bias")
    ]
    assert list(nets.pdn_medium(384).state_dict()) == [
        f"{i}.{p}" for i in (0, 3, 6, 8, 10, 12) for p in ("weight", "bias")
    ]


def test_unknown_architecture() -> None:
    with pytest.raises(EdgeADError, match="efficientad-s, efficientad-m"):
        nets.teacher("efficientad-xl")


def _random_models(
    arch: str,
) -> tuple[torch.nn.Sequential, torch.nn.Sequential, nets.Autoencoder, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    t, s, a = nets.teacher(arch), nets.student(arch), nets.autoencoder()
    # Channel statistics of the right order of magnitude, and far from (0, 1) so that
    # a fold that forgot them would show.
    mean = torch.randn(1, 384, 1, 1) * 0.05
    std = torch.rand(1, 384, 1, 1) * 0.05 + 0.01
    return t, s, a, mean, std


def test_folded_graph_equals_reference_maps() -> None:
    t, s, a, mean, std = _random_models("efficientad-s")
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (t, s)]
    graph = InferenceGraph(t, s, a, mean, std)
    image = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)

    with torch.no_grad():
        map_st, map_ae = graph(image)
    ref_st, ref_ae = reference_maps(t, s, a, mean, std, normalise(image))

    assert map_st.dtype == map_ae.dtype == torch.float32
    assert map_st.shape == map_ae.shape == (1, 1, 56, 56)
    for ref in (ref_st, ref_ae):  # maps that vary by far more than the tolerance
        assert ref.max() - ref.min() > 0.01 * ref.abs().max() > 0
    torch.testing.assert_close(map_st, ref_st, rtol=1e-5, atol=1e-6 * ref_st.abs().max().item())
    torch.testing.assert_close(map_ae, ref_ae, rtol=1e-5, atol=1e-6 * ref_ae.abs().max().item())
    # Folding works on copies.
    for module, state in zip((t, s), before, strict=True):
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_graph_stays_in_eval_mode() -> None:
    t, s, a, mean, std = _random_models("efficientad-s")
    graph = InferenceGraph(t, s, a, mean.flatten(), std.flatten()).train()
    assert not any(m.training for m in graph.modules())
    assert not any(p.requires_grad for p in graph.parameters())


def test_wrong_statistics_shape() -> None:
    t, s, a, mean, _ = _random_models("efficientad-s")
    with pytest.raises(EdgeADError, match=r"teacher_std: expected 384 values.*\(768,\)"):
        InferenceGraph(t, s, a, mean, torch.ones(768))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_reference_teacher_state_dict(tmp_path, prefix: str) -> None:
    torch.manual_seed(1)
    published = nets.pdn_small(384)  # stands in for the community's teacher_small.pth
    state = {prefix + k: v for k, v in published.state_dict().items()}
    path = tmp_path / "teacher_small.pth"
    torch.save(state, path)

    loaded = nets.load_teacher_weights(nets.teacher("efficientad-s"), path)

    for key, value in published.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_wrong_architecture_names_file_and_keys(tmp_path) -> None:
    path = tmp_path / "teacher_medium.pth"
    torch.save(nets.pdn_medium(384).state_dict(), path)
    with pytest.raises(EdgeADError, match=r"teacher_medium\.pth.*unexpected keys \['10\.bias'"):
        nets.load_teacher_weights(nets.teacher("efficientad-s"), path)


def test_load_wrong_shapes_names_the_key(tmp_path) -> None:
    path = tmp_path / "student.pth"
    torch.save(nets.student("efficientad-s").state_dict(), path)
    with pytest.raises(EdgeADError, match=r"student\.pth.*8\.weight: expected \(384, 256, 4, 4\)"):
        nets.load_teacher_weights(nets.teacher("efficientad-s"), path)


def test_load_rejects_pickled_modules(tmp_path) -> None:
    # weights_only=True: a whole pickled module (what the reference training script saves)
    # is refused rather than unpickled.
    path = tmp_path / "teacher_final.pth"
    torch.save(nets.teacher("efficientad-s"), path)
    with pytest.raises(EdgeADError, match=r"teacher_final\.pth: expected a state dict"):
        nets.load_teacher_weights(nets.teacher("efficientad-s"), path)
