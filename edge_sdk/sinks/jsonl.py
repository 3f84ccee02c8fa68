"""Every result as one JSON line, to stdout or to a file flushed after each line.

A line is written whole or not at all: when the disk is full the part that made it is
truncated away, and a line cut off by a crash gets the next one on a line of its own.
With `rotate_bytes`, a file about to grow past the limit is renamed to ``path.1`` (older
ones shift to ``.2`` ... ``.keep_files``; the oldest goes) and a new file is started, so a
reader that follows ``path`` never sees a line cut in two.

>>> import io, numpy as np
>>> from edge_sdk.records import Frame, Result, Verdict
>>> from edge_sdk.records import Inspection
>>> out = io.StringIO()
>>> sink = JsonlSink(stream=out)
>>> frame = Frame(np.zeros((2, 2), np.uint8), frame_id=3, timestamp_ns=0, camera_id="cam0")
>>> sink(Inspection(frame, Result(3, Verdict.OK, 0.1, 0.5), pixel_threshold=0.1))
>>> sorted(json.loads(out.getvalue()))  # doctest: +NORMALIZE_WHITESPACE
['camera', 'error', 'frame_id', 'latency', 'part_id', 'run_id', 'score', 'threshold',
 'timestamp', 'verdict']
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import IO

from edge_sdk.records import Inspection
from edge_sdk.sinks.errors import SinkError
from edge_sdk.sinks.record import result_record

__all__ = ["JsonlSink"]


class JsonlSink:
    """Writes `result_record(inspection)` as one line per result.

    Give `path` for a file (appended to, created with its folder) or `stream` for an
    open text stream; neither means stdout.
    """

    needs_pixels = False  # the record and the verdict only

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        stream: IO[str] | None = None,
        rotate_bytes: int | None = None,
        keep_files: int = 5,
        name: str = "jsonl",
    ) -> None:
        if path is not None and stream is not None:
            raise ValueError("give a path or a stream, not both")
        self.name = name
        self.path = Path(path) if path is not None else None
        self._rotate_bytes = rotate_bytes
        self._keep_files = keep_files
        self._lock = threading.Lock()  # close() may come from another thread
        self._owned: IO[bytes] | None = None
        self._stream: IO[str] | None = stream
        self._needs_newline = False

    def __call__(self, inspection: Inspection) -> None:
        line = json.dumps(result_record(inspection), separators=(",", ":")) + "\n"
        with self._lock:
            try:
                if self.path is None:
                    stream = self._stream or sys.stdout
                    stream.write(line)
                    stream.flush()
                else:
                    self._append(line.encode())
            except OSError as exc:
                self._discard()  # reopen next time: the disk may come back
                where = self.path or "the output stream"
                raise SinkError(f"cannot write JSON line to {where}: {exc}") from exc

    def close(self) -> None:
        """Close the file (a stream given by the caller stays open)."""
        with self._lock:
            self._discard()

    def _append(self, data: bytes) -> None:
        """One whole record or none: unbuffered writes, and a record cut short (a full
        disk) is truncated away; if even that fails, the next record starts on a new line.
        """
        fd = self._open().fileno()
        start = os.fstat(fd).st_size
        if self._rotate_bytes and start and start + len(data) > self._rotate_bytes:
            fd = self._rotate().fileno()
            start = os.fstat(fd).st_size
        if self._needs_newline:
            data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                self._needs_newline = True
            raise
        self._needs_newline = False

    def _open(self) -> IO[bytes]:
        if self._owned is not None:
            return self._owned
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._owned = open(self.path, "ab", buffering=0)  # noqa: SIM115
        # A record cut off by a crash or a full disk: do not glue the next one to it.
        size = os.fstat(self._owned.fileno()).st_size
        if size:
            with open(self.path, "rb") as tail:
                tail.seek(size - 1)
                self._needs_newline = self._needs_newline or tail.read(1) != b"\n"
        return self._owned

    def _rotate(self) -> IO[bytes]:
        assert self.path is not None
        self._discard()
        for i in range(self._keep_files - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._needs_newline = False
        return self._open()

    def _discard(self) -> None:
        if self._owned is not None:
            try:
                self._owned.close()
            finally:
                self._owned = None
