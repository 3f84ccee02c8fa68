"""Measuring a bundle on labelled images: exact metrics, the report and its pictures.

    metrics    image and pixel AUROC, AU-PRO, rates with Wilson intervals (numpy + OpenCV)
    dataset    MVTec AD-layout test sets, images and masks
    report     `evaluate` a bundle on a test set; `report.json` and a text summary
    plots      score histograms, the ROC curve, ground-truth outlines (OpenCV)
    commands   the `edge-ad eval` and `edge-ad calibrate` commands

Submodules load on first use, so importing this package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_sdk.evaluation.dataset import TestSet, find_test_set
    from edge_sdk.evaluation.metrics import PixelScores
    from edge_sdk.evaluation.report import evaluate, evaluate_bundle, format_summary
    from edge_sdk.statistics import auroc, rate, roc_curve

_LAZY = {
    "PixelScores": "edge_sdk.evaluation.metrics",
    "auroc": "edge_sdk.statistics",
    "rate": "edge_sdk.statistics",
    "roc_curve": "edge_sdk.statistics",
    "TestSet": "edge_sdk.evaluation.dataset",
    "find_test_set": "edge_sdk.evaluation.dataset",
    "evaluate": "edge_sdk.evaluation.report",
    "evaluate_bundle": "edge_sdk.evaluation.report",
    "format_summary": "edge_sdk.evaluation.report",
}

__all__ = [
    "PixelScores",
    "TestSet",
    "auroc",
    "evaluate",
    "evaluate_bundle",
    "find_test_set",
    "format_summary",
    "rate",
    "roc_curve",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_sdk.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
