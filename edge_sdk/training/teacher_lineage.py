"""Continuing a distilled teacher in a new run (``edge-ad pretrain-teacher --init FILE``).

A long distillation on a CPU outlives one working session, and a machine's scratch space need
not outlive it either; the teacher file itself (float16, with its record) is what is kept. A
continued run loads that teacher's weights, starts a fresh Adam with its own warm-up and cosine
decay (a warm restart), and draws the photos from where the parent's draws ended, so no photo
crop of the lineage repeats. Its record keeps every run as a *segment* and counts the steps
and wall time of the whole lineage.

A parent is accepted only if its targets are the ones this run computes: the same
architecture, backbone and layers, target layout, projection seed and images, and photo folder
(by count, and by content fingerprint where the parent recorded one); the PCA projection is
refitted deterministically and its explained variance must match the parent's. A parent
distilled to the other projection of the same subspace (``pca`` for a ``pca-rotated`` run, or
back) is first re-expressed in this run's exactly, by a linear map folded into its last
convolution (:func:`edge_sdk.training.teacher_targets.change_of_targets`), so switching
projections keeps the distillation already done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sdk.errors import ConfigError
from edge_sdk.training.teacher_targets import PROJECTIONS

__all__ = ["Parent", "check_projection", "lineage_record", "read_parent"]

# Explained variance is recorded to four places; a refit on other hardware agrees to that.
_VARIANCE_TOLERANCE = 2e-4


@dataclass(frozen=True)
class Parent:
    """A teacher to continue: its file (weights loaded by ``networks.load_teacher_weights``)
    and its record."""

    path: Path
    record: dict[str, Any]

    @property
    def projection(self) -> str:
        """The projection kind of the targets it was distilled to; records from before the
        choice say none, and "pca" was the only one there was."""
        return str(self.record.get("projection", {}).get("kind", "pca"))

    @property
    def steps(self) -> int:
        return int(self.record["steps"])

    def segments(self) -> list[dict[str, Any]]:
        """The runs that made the parent; a parent made in one run has one."""
        if "segments" in self.record:
            return list(self.record["segments"])
        return [_segment(self.record)]


def read_parent(
    path: Path,
    *,
    architecture: str,
    backbone_record: dict[str, Any],
    seed: int,
    projection_images: int,
    photos_count: int,
    photos_fingerprint: str,
    target_layout: str = "points",
) -> Parent:
    """Read the ``.json`` record of the teacher at ``path``; raise :class:`ConfigError`
    naming the first field that differs from this run's."""
    sidecar = path.with_name(path.name + ".json")
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"--init {path}: {exc.filename} not found (a teacher needs its .pth and its .json)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--init {path}: cannot read it: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != "edge-ad-teacher/1":
        raise ConfigError(f"--init {sidecar}: not an edge-ad teacher record")
    backbone = record.get("backbone", {})
    photos = record.get("photos", {})
    expected = {
        "architecture": (record.get("architecture"), architecture),
        "backbone": (backbone.get("name"), backbone_record["name"]),
        "backbone layers": (backbone.get("layers"), list(backbone_record["layers"])),
        "seed": (record.get("seed"), seed),
        "projection images": (
            record.get("projection", {}).get("fitted_on_images"),
            projection_images,
        ),
        "photo count": (photos.get("count"), photos_count),
        # Records from before the choice of layout were all "points".
        "target layout": (record.get("projection", {}).get("layout", "points"), target_layout),
    }
    if "fingerprint" in photos:
        expected["photo fingerprint"] = (photos["fingerprint"], photos_fingerprint)
    for name, (found, wanted) in expected.items():
        if found != wanted:
            raise ConfigError(
                f"--init {path}: its {name} is {found!r}, this run's is {wanted!r}; a teacher "
                f"can only be continued on the targets it was distilled to"
            )
    # Another projection of the same subspace is re-expressed exactly (teacher_targets.
    # change_of_targets).
    parent = Parent(path=path, record=record)
    if parent.projection not in PROJECTIONS:
        raise ConfigError(
            f"--init {path}: its projection is {parent.projection!r}, expected one of "
            f"{', '.join(PROJECTIONS)}"
        )
    if not isinstance(record.get("steps"), int) or record["steps"] < 1:
        raise ConfigError(f"--init {sidecar}: no step count")
    if not path.is_file():
        raise ConfigError(f"--init {path}: not found (a teacher needs its .pth and its .json)")
    return parent


def check_projection(parent: Parent, explained_variance: float) -> None:
    """Refuse to continue if the refitted projection is not the parent's."""
    recorded = float(parent.record["projection"]["explained_variance"])
    if abs(recorded - explained_variance) > _VARIANCE_TOLERANCE:
        raise ConfigError(
            f"--init {parent.path}: the refitted projection keeps {explained_variance:.4f} of "
            f"the variance, the parent's kept {recorded:.4f}: the photos or backbone weights "
            f"differ from those it was distilled on"
        )


def _segment(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("steps", "batch_size", "lr", "schedule", "precision", "device", "hardware")
    segment = {k: record[k] for k in keys if k in record}
    segment.update(
        first_loss=record.get("first_loss"),
        final_loss=record.get("final_loss"),
        wall_time_s=record.get("wall_time_s"),
    )
    if "loss_curve" in record:
        segment["loss_curve"] = record["loss_curve"]
    return segment


def lineage_record(parent: Parent | None, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` (this run's) as the record of the whole lineage: steps and wall time summed,
    the first loss of the first run, every run listed under ``segments``."""
    if parent is None:
        return record
    this = _segment(record)
    segments = [*parent.segments(), this]
    return {
        **record,
        "steps": sum(int(s["steps"]) for s in segments),
        "wall_time_s": round(sum(float(s.get("wall_time_s") or 0.0) for s in segments), 1),
        "first_loss": segments[0].get("first_loss"),
        "continued_from": {"sha256": parent.record.get("sha256"), "steps": parent.steps},
        "segments": segments,
    }
