"""Shared fixtures: a real EfficientAD-S bundle (random weights, seeded) built once."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

# As edge_sdk.training sets it for users (see there); test modules may load torch first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
# The shared data sets sit next to the checkout on development machines; CI may lack them.
DATA = Path(os.environ.get("EDGE_AD_DATA", REPO.parent / "shared" / "data"))


def data_set(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name!r} not found at {path} (set EDGE_AD_DATA)")
    return path


def good_images(n: int, *, seed: int = 0, size: tuple[int, int] = (256, 256)) -> list[np.ndarray]:
    from edge_sdk.tools.synthetic import good_part

    rng = np.random.default_rng(seed)
    return [good_part(rng, height=size[0], width=size[1]) for _ in range(n)]


@pytest.fixture(scope="session")
def s_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientAD-S with seeded random weights, calibrated on generated good parts."""
    torch = pytest.importorskip("torch")
    from edge_sdk.training import networks
    from edge_sdk.training.export import export_bundle

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bundles") / "random-s.bundle"
    return export_bundle(
        out,
        architecture="efficientad-s",
        teacher=networks.teacher("efficientad-s"),
        student=networks.student("efficientad-s"),
        autoencoder=networks.autoencoder(),
        teacher_mean=torch.zeros(384),
        teacher_std=torch.ones(384),
        calibration_images=good_images(6),
        name="random-s",
        calibration_source="generated good parts (edge_sdk.tools.synthetic)",
    )


@pytest.fixture()
def rebundle(tmp_path: Path, s_bundle: Path) -> Callable[..., Path]:
    """Copy the S bundle with its manifest or members changed, bypassing validation."""

    def make(
        edit_manifest: Callable[[dict[str, Any]], None] | None = None,
        *,
        files: dict[str, bytes | None] | None = None,
        manifest_text: str | None = None,
        name: str = "edited.bundle",
    ) -> Path:
        with zipfile.ZipFile(s_bundle) as src:
            members = {n: src.read(n) for n in src.namelist()}
        data = yaml.safe_load(members["bundle.yaml"])
        if edit_manifest is not None:
            edit_manifest(data)
        members["bundle.yaml"] = (
            manifest_text if manifest_text is not None else yaml.safe_dump(data)
        ).encode()
        for member, content in (files or {}).items():
            if content is None:
                members.pop(member, None)
            else:
                members[member] = content
        out = tmp_path / name
        with zipfile.ZipFile(out, "w") as dst:
            for member, content in members.items():
                dst.writestr(member, content)
        return out

    return make


@pytest.fixture()
def bundle_dir(tmp_path: Path, s_bundle: Path) -> Path:
    """The S bundle unpacked into a directory (the accepted alternative form)."""
    out = tmp_path / "dir.bundle"
    with zipfile.ZipFile(s_bundle) as src:
        src.extractall(out)
    return out
