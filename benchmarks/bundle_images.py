"""The images the accuracy benchmarks score a bundle on, found as calibration and ``edge-ad
eval`` find them: the held-out good images its manifest names, split as calibration splits
them (quantile and threshold images), and the test set's good and defective images.

Imported by the scripts beside it (``python benchmarks/map_parts.py`` puts this folder on
the path).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def missing_data(data: str | Path) -> bool:
    """True, after saying so, when the data set is not on this machine: a benchmark skips."""
    if Path(data).is_dir():
        return False
    print(f"skipped: no data set at {data}", file=sys.stderr)
    return True


def image_groups(bundle: Any, data: str | Path) -> dict[str, list[Path]]:
    """``held_out``, ``good`` and ``defective`` image paths of ``bundle`` on the MVTec-style
    set ``data`` it was trained on (the held-out names come from its manifest)."""
    from edge_sdk.evaluation.dataset import find_test_set

    names = bundle.manifest.training["validation_split"]["files"]
    test = find_test_set(data)
    return {
        "held_out": [Path(data) / "train" / "good" / n for n in names],
        "good": [s.path for s in test.good],
        "defective": [s.path for s in test.defective],
    }


def calibration_parts(held_out: Sequence[T]) -> tuple[list[T], list[T]]:
    """The held-out items that set the quantiles and those that set the threshold, as
    calibration splits them; below its minimum for a split, all of them set both."""
    from edge_sdk.calibration.quantiles import split_indices

    parts = split_indices(len(held_out))
    if parts is None:
        return list(held_out), list(held_out)
    return [held_out[i] for i in parts[0]], [held_out[i] for i in parts[1]]
