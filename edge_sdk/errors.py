"""The exceptions edge-ad raises.

Every error derives from one root, so a caller can catch them all::

    EdgeADError
     +-- BundleError            a bundle cannot be read, is corrupt or inconsistent
     |    +-- BundleIntegrityError   a graph's sha256 differs from the manifest's
     +-- EngineError            ONNX Runtime cannot build a session or run the graph
     +-- ImageError             an image the model cannot take (edge_sdk.runtime.preprocess)
     +-- ParityError            a graph variant changed verdicts (edge_sdk.runtime.variants)
     +-- SourceError            a frame source failed (edge_sdk.sources.errors: timeouts,
     |                          end of stream, closed, pixel formats)
     +-- SinkError              a sink could not deliver (edge_sdk.sinks.errors)
     +-- ConfigError            a configuration value is missing or invalid
     |    +-- CameraNotFoundError, FeatureError   (edge_sdk.sources.errors)
     +-- MissingDependencyError an optional dependency is not installed (says what to install)

Messages say what was expected, what was found, and name the file and field.
"""

from __future__ import annotations


class EdgeADError(Exception):
    """Root of every error raised by edge-ad."""


class BundleError(EdgeADError):
    """A bundle cannot be read, fails validation, or does not match its graph."""


class BundleIntegrityError(BundleError):
    """A file inside a bundle does not have the sha256 the manifest records."""


class EngineError(EdgeADError):
    """ONNX Runtime cannot build a session for the bundle, or running it failed."""


class ConfigError(EdgeADError):
    """A configuration value is missing or invalid."""


class MissingDependencyError(EdgeADError, ImportError):
    """An optional dependency is needed for this feature and is not installed."""


def require(module: str, *, extra: str, feature: str, install: str | None = None) -> object:
    """Import an optional dependency or raise an error that says how to install it:
    ``install`` where no extra of edge-ad brings it, else ``pip install 'edge-ad[extra]'``.

    >>> require("json", extra="none", feature="reading JSON").__name__
    'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} needs the Python package {module!r}, which is not installed: "
            + (install or f"pip install 'edge-ad[{extra}]'")
        ) from exc
