"""Frame sources: GenICam cameras (Harvesters), image folders, OpenCV video.

All implement `FrameSource` (a context manager with `read(timeout_s=...)`, `frames()`,
`stop()` and `stats`) and yield `edge_sdk.records.Frame`. Harvesters is imported only
when a camera is opened or listed. A test pins `__all__`.
"""

from __future__ import annotations

from edge_sdk.sources.base import FrameSource, SourceStats
from edge_sdk.sources.discovery import CameraInfo, format_cameras, list_cameras, select_camera
from edge_sdk.sources.errors import (
    CameraNotFoundError,
    EndOfStreamError,
    FeatureError,
    FrameTimeoutError,
    PixelFormatError,
    SourceClosedError,
    SourceError,
)
from edge_sdk.sources.files import FolderSource, VideoSource
from edge_sdk.sources.genicam import GenICamSource, ReconnectPolicy
from edge_sdk.sources.pixel_formats import SUPPORTED_FORMATS, decode
from edge_sdk.sources.profiles import CameraProfile, TriggerSettings, apply_profile, load_profile

__all__ = [
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
]
