"""Errors of the frame sources, all under `edge_sdk.errors.EdgeADError`::

EdgeADError
 +-- SourceError                 a frame source cannot open, or failed while reading
 |    +-- FrameTimeoutError      no frame arrived within the timeout (also a TimeoutError)
 |    +-- EndOfStreamError       a finite source (folder, video file) has no more frames
 |    +-- SourceClosedError      read() after close() or while stop() is in effect
 |    +-- PixelFormatError       a buffer's pixel format cannot be decoded
 +-- ConfigError
      +-- CameraNotFoundError    no camera matches the selector (lists those that exist)
      +-- FeatureError           a profile names a feature the camera lacks, or a value
                                 it refuses (names the feature and the allowed values)
"""

from __future__ import annotations

from edge_sdk.errors import ConfigError, EdgeADError

__all__ = [
    "CameraNotFoundError",
    "EndOfStreamError",
    "FeatureError",
    "FrameTimeoutError",
    "PixelFormatError",
    "SourceClosedError",
    "SourceError",
]


class SourceError(EdgeADError):
    """A frame source cannot be opened, or reading from it failed."""


class FrameTimeoutError(SourceError, TimeoutError):
    """No frame arrived within the timeout. The source stays usable."""


class EndOfStreamError(SourceError):
    """A finite source (a folder without loop, a video file) has delivered every frame."""


class SourceClosedError(SourceError):
    """The source was closed or told to stop; no further frames will come."""


class PixelFormatError(SourceError):
    """A buffer holds a pixel format the decoder does not support, or too few bytes."""


class CameraNotFoundError(ConfigError):
    """No camera matches the selector; the message lists the cameras that exist."""


class FeatureError(ConfigError):
    """A camera profile names a feature the camera lacks or a value it refuses."""
