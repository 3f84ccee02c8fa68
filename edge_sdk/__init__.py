"""edge-ad: EfficientAD visual anomaly detection for production lines.

The public surface is listed in `__all__` (a test pins it). Heavy modules (OpenCV,
ONNX Runtime) load on first use, so `import edge_sdk` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import (
    BundleError,
    BundleIntegrityError,
    ConfigError,
    EdgeADError,
    EngineError,
    MissingDependencyError,
)
from edge_sdk.records import Frame, Latency, Result, Verdict

if TYPE_CHECKING:
    from edge_sdk.runtime.bundle import Bundle, write_bundle
    from edge_sdk.runtime.engine import Engine
    from edge_sdk.runtime.inspector import Inspector
    from edge_sdk.runtime.manifest import Manifest
    from edge_sdk.runtime.providers import EngineOptions

__version__ = "0.1.0"

_LAZY = {
    "Bundle": "edge_sdk.runtime.bundle",
    "write_bundle": "edge_sdk.runtime.bundle",
    "Engine": "edge_sdk.runtime.engine",
    "EngineOptions": "edge_sdk.runtime.providers",
    "Inspector": "edge_sdk.runtime.inspector",
    "Manifest": "edge_sdk.runtime.manifest",
}

__all__ = [
    "Bundle",
    "BundleError",
    "BundleIntegrityError",
    "ConfigError",
    "EdgeADError",
    "Engine",
    "EngineError",
    "EngineOptions",
    "Frame",
    "Inspector",
    "Latency",
    "Manifest",
    "MissingDependencyError",
    "Result",
    "Verdict",
    "__version__",
    "write_bundle",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
