"""The one small interface every frame source implements.

A source is a context manager: entering opens the device (or file), leaving releases it,
even after an error. Reading is pull-based with a finite, keyword-only timeout::

    with FolderSource(folder, rate_hz=5) as source:
        for frame in source.frames():
            ...

`stop()` may be called from another thread (a signal handler's flag, the service's
shutdown path): `frames()` then ends and a blocked `read()` returns within one poll
interval instead of waiting for its full timeout.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from edge_sdk.records import Frame
from edge_sdk.sources.errors import EndOfStreamError, FrameTimeoutError, SourceClosedError

__all__ = ["FrameSource", "SourceStats"]


@dataclass(frozen=True)
class SourceStats:
    """What a source has seen since it was opened.

    `lost` counts gaps in the camera's frame ids while every frame was wanted
    (oldest-first buffering, hardware trigger): parts that were never inspected.
    `skipped` counts frames dropped on purpose by newest-only buffering.
    """

    frames: int = 0
    lost: int = 0
    skipped: int = 0
    timeouts: int = 0
    disconnects: int = 0
    reconnects: int = 0

    def to_dict(self) -> dict[str, int]:
        """A JSON-ready copy."""
        return {
            "frames": self.frames,
            "lost": self.lost,
            "skipped": self.skipped,
            "timeouts": self.timeouts,
            "disconnects": self.disconnects,
            "reconnects": self.reconnects,
        }


class FrameSource(ABC):
    """Where frames come from: a camera, a folder of images, a video.

    Subclasses implement `_open`, `_close` and `_read`; `_read` must return within
    `timeout_s` (or shortly after `stop()`), raising `FrameTimeoutError` when nothing came.
    """

    #: How long one wait inside `frames()` lasts before it checks the stop flag again.
    poll_s: float = 0.2

    def __init__(self, *, camera_id: str) -> None:
        self.camera_id = camera_id
        self._stop = threading.Event()
        self._is_open = False
        self._stats = SourceStats()

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        """Open the device or file. Entering the context manager calls this."""
        if self._is_open:
            return
        self._stop.clear()
        self._stats = SourceStats()
        self._open()
        self._is_open = True

    def close(self) -> None:
        """Release the device or file. Safe to call twice and from `__exit__` after errors."""
        self._stop.set()
        if self._is_open:
            self._is_open = False
            self._close()

    def stop(self) -> None:
        """Ask a running `frames()` loop or blocked `read()` to end. Thread-safe."""
        self._stop.set()

    @property
    def connected(self) -> bool:
        """False while no frames can come: closed, or (a camera) lost and reconnecting.
        A lost camera must not look like a line without parts."""
        return self._is_open

    @property
    def stopping(self) -> bool:
        """True once `stop()` or `close()` was called."""
        return self._stop.is_set()

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------
    def read(self, *, timeout_s: float = 1.0) -> Frame:
        """The next frame. Raises `FrameTimeoutError` if none came within `timeout_s`,
        `EndOfStreamError` at the end of a finite source and `SourceClosedError` after
        `stop()` or `close()`.
        """
        if not self._is_open or self._stop.is_set():
            raise SourceClosedError(f"source {self.camera_id!r} is closed or stopping")
        return self._read(timeout_s=timeout_s)

    def frames(self) -> Iterator[Frame]:
        """Every frame until the source ends or `stop()` is called.

        Timeouts do not end the iteration (a triggered line may be idle for hours); they
        are counted in `stats`. Each wait lasts `poll_s`, so `stop()` takes effect quickly.
        """
        while not self._stop.is_set():
            try:
                yield self.read(timeout_s=self.poll_s)
            except FrameTimeoutError:
                continue
            except (EndOfStreamError, SourceClosedError):
                return

    @property
    def stats(self) -> SourceStats:
        """Counters since `open()` (an immutable snapshot)."""
        return self._stats

    def _count(self, **increments: int) -> None:
        values = self._stats.to_dict()
        for key, step in increments.items():
            values[key] += step
        self._stats = SourceStats(**values)

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _read(self, *, timeout_s: float) -> Frame: ...
