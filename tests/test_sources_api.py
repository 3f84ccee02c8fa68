"""The public surface of edge_sdk.sources, its doctests, and that it imports light."""

from __future__ import annotations

import subprocess
import sys

import edge_sdk.sources

PUBLIC = {
    "SUPPORTED_FORMATS",
    "CameraInfo",
    "CameraNotFoundError",
    "CameraProfile",
    "EndOfStreamError",
    "FeatureError",
    "FolderSource",
    "FrameSource",
    "FrameTimeoutError",
    "GenICamSource",
    "PixelFormatError",
    "ReconnectPolicy",
    "SourceClosedError",
    "SourceError",
    "SourceStats",
    "TriggerSettings",
    "VideoSource",
    "apply_profile",
    "decode",
    "format_cameras",
    "list_cameras",
    "load_profile",
    "select_camera",
}


def test_public_surface_is_pinned() -> None:
    assert set(edge_sdk.sources.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(edge_sdk.sources, name) is not None


def test_errors_hang_under_the_root() -> None:
    from edge_sdk.errors import ConfigError, EdgeADError

    assert issubclass(edge_sdk.sources.FrameTimeoutError, TimeoutError)
    assert issubclass(edge_sdk.sources.CameraNotFoundError, ConfigError)
    assert issubclass(edge_sdk.sources.FeatureError, ConfigError)
    for name in PUBLIC:
        obj = getattr(edge_sdk.sources, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, EdgeADError), name


def test_importing_sources_does_not_load_harvesters() -> None:
    code = "import edge_sdk.sources, sys; print('harvesters' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
