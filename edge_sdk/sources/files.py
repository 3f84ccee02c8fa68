"""Frame sources without a GenICam camera: a folder of images and OpenCV video.

`FolderSource` replays image files at a set rate (demos, tests, offline runs);
`VideoSource` reads what `cv2.VideoCapture` opens: video files, a USB webcam by index,
an RTSP or HTTP stream by URL.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edge_sdk.images import IMAGE_SUFFIXES, list_images
from edge_sdk.records import Frame
from edge_sdk.sources.base import FrameSource
from edge_sdk.sources.errors import (
    EndOfStreamError,
    FrameTimeoutError,
    SourceClosedError,
    SourceError,
)

__all__ = ["IMAGE_SUFFIXES", "FolderSource", "VideoSource"]

logger = logging.getLogger(__name__)


class FolderSource(FrameSource):
    """Replays the images of a folder (sorted by name, not recursive) or a list of files.

    Images are read with ``cv2.IMREAD_ANYCOLOR``: grey files give HxW frames, colour files
    HxWx3 BGR, all uint8. `rate_hz` paces delivery (None: as fast as read() is called);
    a slow reader is not made up for with a burst. Frame ids count up from 0 across loops;
    `part_id` is the file name; the timestamp is the host clock at delivery.

    >>> import tempfile, numpy as np, cv2, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = cv2.imwrite(str(folder / "a.png"), np.zeros((4, 6), np.uint8))
    >>> with FolderSource(folder) as source:
    ...     [(f.frame_id, f.image.shape, f.part_id) for f in source.frames()]
    [(0, (4, 6), 'a.png')]
    """

    def __init__(
        self,
        images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        rate_hz: float | None = None,
        loop: bool = False,
        camera_id: str = "folder",
    ) -> None:
        super().__init__(camera_id=camera_id)
        if rate_hz is not None and rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive or None, got {rate_hz}")
        self._spec = images
        self._period_ns = 0 if rate_hz is None else int(1e9 / rate_hz)
        self._loop = loop
        self._files: list[Path] = []
        self._next = 0
        self._due_ns = 0

    @property
    def files(self) -> list[Path]:
        """The image files in replay order (after `open()`)."""
        return list(self._files)

    def _open(self) -> None:
        self._files = _list_images(self._spec)
        self._next = 0
        self._due_ns = time.monotonic_ns()

    def _close(self) -> None:
        self._files = []

    def _read(self, *, timeout_s: float) -> Frame:
        index = self._next
        if index >= len(self._files) and not self._loop:
            raise EndOfStreamError(f"all {len(self._files)} images of {self._spec} were read")
        wait_ns = self._due_ns - time.monotonic_ns()
        if wait_ns > 0:
            if wait_ns > timeout_s * 1e9:
                self._stop.wait(timeout_s)
                self._count(timeouts=1)
                raise FrameTimeoutError(f"next image of {self.camera_id!r} is not due yet")
            if self._stop.wait(wait_ns / 1e9):
                raise SourceClosedError(f"source {self.camera_id!r} was stopped")
        path = self._files[index % len(self._files)]
        image = cv2.imread(str(path), cv2.IMREAD_ANYCOLOR)
        if image is None:
            raise SourceError(f"{path}: cannot be read as an image")
        if image.dtype != np.uint8:  # e.g. 32-bit float TIFF: refuse rather than guess a scale
            raise SourceError(f"{path}: expected an 8-bit image, found {image.dtype}")
        self._next = index + 1
        # Pace from now, not from the schedule, so a slow reader never gets a burst.
        self._due_ns = max(self._due_ns, time.monotonic_ns()) + self._period_ns
        self._count(frames=1)
        return Frame(
            image=image,
            frame_id=index,
            timestamp_ns=time.time_ns(),
            camera_id=self.camera_id,
            part_id=path.name,
        )


def _list_images(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(spec, (str, os.PathLike)):
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise SourceError(f"image folder {folder} does not exist or is not a folder")
        files = list_images(folder, recursive=False)
        if not files:
            raise SourceError(
                f"image folder {folder} holds no images "
                f"(expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return files
    files = [Path(p).expanduser() for p in spec]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise SourceError(f"image files not found: {', '.join(missing)}")
    if not files:
        raise SourceError("the list of image files is empty")
    return files


class VideoSource(FrameSource):
    """Frames from ``cv2.VideoCapture``: a file path, a device index (webcam) or a URL.

    Files end with `EndOfStreamError` (or restart when `loop`). Frame ids count the
    frames delivered, from 0, across loops. Timestamps are the
    host clock when the frame was decoded. OpenCV reads block without a timeout, so the
    open and read timeouts are handed to the FFmpeg backend (RTSP, HTTP) instead; a
    webcam that stops delivering shows up as a read error.

    `rate_hz` paces file playback (None: as fast as decoded).
    """

    def __init__(
        self,
        uri: str | int | os.PathLike[str],
        *,
        camera_id: str | None = None,
        loop: bool = False,
        rate_hz: float | None = None,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(camera_id=camera_id if camera_id is not None else str(uri))
        self._uri = uri
        self._loop = loop
        self._period_ns = 0 if rate_hz is None else int(1e9 / rate_hz)
        self._open_timeout_ms = int(open_timeout_s * 1000)
        self._read_timeout_ms = int(read_timeout_s * 1000)
        self._capture: cv2.VideoCapture | None = None
        self._is_file = False
        self._count_read = 0
        self._due_ns = 0

    def _open(self) -> None:
        uri = self._uri
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            self._open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self._read_timeout_ms,
        ]
        if isinstance(uri, int) or (isinstance(uri, str) and uri.isdigit()):
            capture = cv2.VideoCapture(int(uri), cv2.CAP_ANY, params)
        else:
            text = os.fspath(uri)
            self._is_file = "://" not in text
            if self._is_file and not Path(text).expanduser().is_file():
                raise SourceError(f"video file {text} does not exist")
            if self._is_file:
                text = str(Path(text).expanduser())
            capture = cv2.VideoCapture(text, cv2.CAP_ANY, params)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"OpenCV cannot open video {uri!r} (file, device index or URL)")
        self._capture = capture
        self._count_read = 0
        self._due_ns = time.monotonic_ns()

    def _close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _read(self, *, timeout_s: float) -> Frame:
        capture = self._capture
        assert capture is not None
        wait_ns = self._due_ns - time.monotonic_ns()
        if wait_ns > 0:
            if wait_ns > timeout_s * 1e9:
                self._stop.wait(timeout_s)
                self._count(timeouts=1)
                raise FrameTimeoutError(f"next frame of {self.camera_id!r} is not due yet")
            if self._stop.wait(wait_ns / 1e9):
                raise SourceClosedError(f"source {self.camera_id!r} was stopped")
        ok, image = capture.read()
        if not ok and self._is_file and self._loop and self._count_read > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = capture.read()
        if not ok:
            if self._is_file:
                raise EndOfStreamError(f"video {self._uri} ended after {self._count_read} frames")
            raise SourceError(f"video {self._uri!r} delivered no frame (stream ended or stalled)")
        self._count_read += 1
        self._due_ns = max(self._due_ns, time.monotonic_ns()) + self._period_ns
        self._count(frames=1)
        return Frame(
            image=image,
            frame_id=self._count_read - 1,
            timestamp_ns=time.time_ns(),
            camera_id=self.camera_id,
        )
