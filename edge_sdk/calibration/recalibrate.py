"""Recalibration: new quantiles and threshold for a trained bundle from new images (new
lighting, a new camera), without retraining, written as a new bundle.

The graphs are copied byte for byte; only the manifest is new. It records its parent as
`<parent name>@sha256:<sha256 of the parent's bundle.yaml>`, so the line can tell which
calibration it replaced and prove that the graph is the one that was validated.

>>> from edge_sdk.calibration.recalibrate import recalibrate                      # doctest: +SKIP
>>> recalibrate("screw.bundle", good_images, out="screw-new-light.bundle")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk import __version__
from edge_sdk.calibration.quantiles import calibrate
from edge_sdk.errors import BundleError
from edge_sdk.runtime.bundle import MANIFEST_NAME, Bundle, sha256_hex, write_bundle
from edge_sdk.runtime.engine import Device, Engine, EngineOptions
from edge_sdk.runtime.manifest import MapWeights

log = logging.getLogger(__name__)


def parent_reference(bundle: Bundle) -> str:
    """`<name>@sha256:<hex>` of a bundle's manifest bytes, as stored in the bundle."""
    digest = sha256_hex(bundle.read_member(MANIFEST_NAME))
    return f"{bundle.manifest.name}@sha256:{digest}"


def default_name(parent_name: str, *, now: datetime | None = None) -> str:
    """`<parent>-recal-<YYYYMMDD>`.

    >>> default_name("screw", now=datetime(2025, 3, 1, tzinfo=timezone.utc))
    'screw-recal-20250301'
    """
    when = now or datetime.now(timezone.utc)
    return f"{parent_name}-recal-{when:%Y%m%d}"


def recalibrate(
    bundle: str | os.PathLike[str] | Bundle,
    good_images: Iterable[np.ndarray],
    *,
    out: str | os.PathLike[str],
    bad_images: Iterable[np.ndarray] | None = None,
    target_frr: float = 0.01,
    policy: str | None = None,
    name: str | None = None,
    description: str | None = None,
    device: Device = "cpu",
    good_source: str = "",
    bad_source: str = "",
    weights: MapWeights | None = None,
) -> Path:
    """Measure new quantiles and a new threshold on `good_images` (and `bad_images`, if
    given, for the threshold policy) through the bundle's own float32 graph, and write a
    new bundle at `out` with the same graphs and a new manifest. `out` must not exist.

    Good images are split (`edge_sdk.calibration.quantiles.split_indices`) so that the threshold is
    not chosen on the images that set the quantiles; with too few, the policy says so.
    The child keeps its parent's map weights unless `weights` replaces them.
    """
    parent = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    out_path = Path(out).expanduser().absolute()
    if out_path.exists():
        raise BundleError(
            f"{out_path}: already exists; bundles are immutable, choose a new "
            "name for the recalibrated bundle"
        )
    if out_path == parent.path:
        raise BundleError(f"{out_path}: the recalibrated bundle cannot replace its parent")
    pm = parent.manifest
    # Every member but the manifest, as stored: graphs are verified against their sha256.
    files: dict[str, bytes] = {}
    graph_members = {ref.file: variant for variant, ref in pm.graph_files().items()}
    for member in parent.member_names():
        if member == MANIFEST_NAME:
            continue
        variant = graph_members.get(member)
        files[member] = parent.graph(variant) if variant else parent.read_member(member)

    # The float32 graph is the reference the variants were checked against.
    engine = Engine.from_bundle(parent, EngineOptions(device=device, variant="fp32"), warmup=False)
    norm, threshold, record = calibrate(
        engine,
        good_images,
        resize=pm.model.input.resize,
        target_frr=target_frr,
        source=good_source,
        bad_images=bad_images,
        policy=policy,
        split=True,
        bad_source=bad_source,
        like=pm.normalization,
        weights=weights,
        tiling=pm.model.input.tiling,
    )
    calibration: dict[str, Any] = {
        **record,
        "graph": "fp32",
        "provider": engine.provider,
        "recalibrated_from": {
            "normalization": pm.normalization.model_dump(mode="json"),
            "threshold": {"image": pm.threshold.image, "pixel": pm.threshold.pixel},
        },
    }
    reference = parent_reference(parent)
    manifest = pm.model_copy(
        update={
            "name": name or default_name(pm.name),
            "created": datetime.now(timezone.utc),
            "created_by": f"edge-ad {__version__}",
            "description": description
            if description is not None
            else f"{pm.name} recalibrated on {record['images']} good images"
            + (f" from {good_source}" if good_source else ""),
            "parent": reference,
            "normalization": norm,
            "threshold": threshold,
            "calibration": calibration,
        }
    )
    written = write_bundle(out_path, manifest, files)
    log.info(
        "recalibrated %s -> %s: threshold %.6g -> %.6g",
        reference,
        written,
        pm.threshold.image,
        threshold.image,
    )
    return written


__all__ = ["default_name", "parent_reference", "recalibrate"]
