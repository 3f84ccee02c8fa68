"""A deep check of a bundle: manifest, hashes, graph signatures, and a real run of each
graph on the CPU. `edge-ad bundle verify` prints what it checked.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edge_sdk.errors import BundleError
from edge_sdk.runtime.bundle import Bundle
from edge_sdk.runtime.engine import Engine, EngineOptions


def verify_bundle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Raise a `BundleError`/`EngineError` naming what is wrong, or return what was checked."""
    bundle = Bundle.open(path)
    manifest = bundle.manifest
    checks = [f"manifest {manifest.format} parses and validates ({manifest.name})"]
    spec = manifest.model.input
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 256, size=(1, 3, spec.height, spec.width), dtype=np.uint8)
    shapes: dict[str, list[int]] = {}
    for variant, ref in manifest.graph_files().items():
        graph = bundle.graph(variant)
        checks.append(f"{variant}: {ref.file} sha256 matches ({len(graph)} bytes)")
        engine = Engine.from_graph(
            graph,
            manifest.model,
            EngineOptions(device="cpu"),
            variant=variant,
            source=str(bundle.path),
            warmup=False,
        )
        checks.append(f"{variant}: graph loads; input and outputs match the manifest")
        map_st, map_ae = engine.run(probe)
        for key, out in (("map_st", map_st), ("map_ae", map_ae)):
            if out.ndim != 4 or out.shape[:2] != (1, 1):
                raise BundleError(
                    f"{bundle.path}: graph {ref.file!r} output {key} has shape "
                    f"{list(out.shape)}, expected [1, 1, h, w]"
                )
            if not np.all(np.isfinite(out)):
                raise BundleError(
                    f"{bundle.path}: graph {ref.file!r} output {key} is not finite on a test image"
                )
        if map_st.shape != map_ae.shape:
            raise BundleError(
                f"{bundle.path}: graph {ref.file!r} map_st {list(map_st.shape)} "
                f"and map_ae {list(map_ae.shape)} differ in shape"
            )
        shapes[variant] = list(map_st.shape)
        checks.append(f"{variant}: runs on the CPU; maps {list(map_st.shape[2:])}, finite")
    return {"path": str(bundle.path), "name": manifest.name, "checks": checks, "map_shapes": shapes}
