"""Image archive: every reject, and every Nth pass, with its overlay and a JSON sidecar.

One entry is three files in `root`, sharing a stem that sorts by time::

    20250101T120000.123456Z_cam0_000000001234_NOK.png           the image, lossless
    20250101T120000.123456Z_cam0_000000001234_NOK.overlay.jpg   what the operator saw
    20250101T120000.123456Z_cam0_000000001234_NOK.json          the result record, written
                                                                last: no sidecar, no entry

Retention deletes whole entries, oldest first, past `max_entries` or `max_bytes`. Before
each entry the free space on the archive's disk is checked: below `min_free_bytes` plus
the entry about to be written (the mean size of the entries written so far; before the
first, a bound from the image size) nothing is written, the skip is counted, the runner
drops the item without retrying (`PermanentSinkError`) and health reports "degraded"
until space returns. A write that fails for want of space (ENOSPC, a quota, a file size
limit) is dropped the same way: retrying it would only hold up the entries behind it.
The archive never fills the disk that the service, journald and the OS share.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.errors import ConfigError
from edge_sdk.records import Inspection, Verdict
from edge_sdk.runtime.overlay import encode_jpeg, write_image
from edge_sdk.sinks.config import ArchiveSinkConfig
from edge_sdk.sinks.errors import PermanentSinkError, SinkError
from edge_sdk.sinks.record import iso_utc, result_record, wall_time_ns

__all__ = ["ArchiveSink"]

logger = logging.getLogger(__name__)

_SUFFIXES = (".png", ".overlay.jpg", ".json")


@dataclass(frozen=True)
class _Entry:
    stem: str
    size: int


class ArchiveSink:
    """Writes archive entries under `config.root` (absolute; created if missing)."""

    def __init__(self, config: ArchiveSinkConfig, *, name: str | None = None) -> None:
        if not config.root.is_absolute():
            raise ValueError(f"archive root must be absolute, got {config.root}")
        self.name = name or config.name or "archive"
        self.config = config
        self.root = config.root
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            writable = os.access(self.root, os.W_OK | os.X_OK)
        except OSError as exc:
            raise ConfigError(
                f"sink {self.name!r}: cannot create archive root {self.root}: {exc}"
            ) from None
        if not writable:
            raise ConfigError(f"sink {self.name!r}: archive root {self.root} is not writable")
        self._lock = threading.Lock()  # health() reads from another thread
        self._entries: deque[_Entry] = deque()
        self._bytes = 0
        self._oks_seen = 0
        self.skipped_low_space = 0
        self.written = 0
        self.deleted = 0
        self._low_space: str | None = None
        self._written_bytes = 0  # by this run: the mean entry size for the space check
        self._scan()

    # -- the sink protocol ---------------------------------------------------------------
    def __call__(self, inspection: Inspection) -> None:
        verdict = inspection.result.verdict
        if verdict is Verdict.OK:
            self._oks_seen += 1
            every = self.config.ok_every
            if not every or (self._oks_seen - 1) % every:
                return
        image = inspection.frame.image
        # Checked before rendering the overlay: no work for an entry that cannot be kept.
        self._check_space(self._expected_entry_bytes(image.nbytes, image.shape))
        overlay_jpeg = encode_jpeg(inspection.overlay(), quality=self.config.jpeg_quality)
        stem = self._stem(inspection)
        try:
            write_image(self.root / f"{stem}.png", image)
            tmp = self.root / f".{stem}.overlay.jpg.tmp"
            tmp.write_bytes(overlay_jpeg)
            os.replace(tmp, self.root / f"{stem}.overlay.jpg")
            sidecar = {
                **result_record(inspection),
                "pixel_threshold": inspection.pixel_threshold,
                "image_shape": list(image.shape),
                "files": {"image": f"{stem}.png", "overlay": f"{stem}.overlay.jpg"},
            }
            tmp = self.root / f".{stem}.json.tmp"
            tmp.write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
            os.replace(tmp, self.root / f"{stem}.json")
        except Exception as exc:
            self._remove(stem)
            cause = exc if isinstance(exc, OSError) else exc.__cause__
            if isinstance(cause, OSError) and cause.errno in _NO_SPACE:
                self.skipped_low_space += 1
                self._low_space = f"{self.root} is full ({cause.strerror})"
                raise PermanentSinkError(f"archive {self.root}: writing {stem}: {exc}") from exc
            raise SinkError(f"archive {self.root}: writing {stem}: {exc}") from exc
        size = sum(_size(self.root / f"{stem}{s}") for s in _SUFFIXES)
        with self._lock:
            self._entries.append(_Entry(stem, size))
            self._bytes += size
            self.written += 1
            self._written_bytes += size
        self._enforce_retention()

    def degraded_reason(self) -> str | None:
        """Why the archive is not keeping everything it should, or None."""
        return self._low_space

    def stats(self) -> dict[str, int]:
        """Entries and bytes kept, and counts since start."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "written": self.written,
                "deleted": self.deleted,
                "skipped_low_space": self.skipped_low_space,
            }

    def close(self) -> None:
        """Nothing to release: every entry is complete when the call returns."""

    # -- internals -----------------------------------------------------------------------
    def _expected_entry_bytes(self, nbytes: int, shape: tuple[int, ...]) -> int:
        with self._lock:
            if self.written:
                return 2 * self._written_bytes // self.written  # twice the mean: a margin
        # A PNG is rarely larger than the raw image, nor the overlay JPEG than a BGR copy.
        return nbytes + shape[0] * shape[1] * 3 + 4096

    def _check_space(self, expected_bytes: int) -> None:
        free = shutil.disk_usage(self.root).free
        floor = int(self.config.min_free_bytes)
        if free - expected_bytes < floor:
            self.skipped_low_space += 1
            self._low_space = (
                f"free space on {self.root} is {_human(free)}, less than the floor of "
                f"{_human(floor)} plus the next entry ({_human(expected_bytes)}); "
                f"{self.skipped_low_space} entries not written"
            )
            raise PermanentSinkError(f"archive not written: {self._low_space}")
        self._low_space = None

    def _stem(self, inspection: Inspection) -> str:
        stamp = iso_utc(wall_time_ns(inspection)).replace("-", "").replace(":", "")
        camera = "".join(c if c.isalnum() or c in "-." else "_" for c in inspection.frame.camera_id)
        result = inspection.result
        return f"{stamp}_{camera or 'camera'}_{result.frame_id:012d}_{result.verdict.value}"

    def _enforce_retention(self) -> None:
        max_entries, max_bytes = self.config.max_entries, self.config.max_bytes
        while True:
            with self._lock:
                over_count = max_entries is not None and len(self._entries) > max_entries
                over_bytes = max_bytes is not None and self._bytes > max_bytes
                if not (over_count or over_bytes) or len(self._entries) <= 1:
                    return
                oldest = self._entries.popleft()
                self._bytes -= oldest.size
                self.deleted += 1
            self._remove(oldest.stem)

    def _remove(self, stem: str) -> None:
        # The sidecar goes first: a half-deleted entry is then no entry at all.
        for suffix in (".json", ".png", ".overlay.jpg"):
            try:
                (self.root / f"{stem}{suffix}").unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("archive %s: cannot delete %s%s: %s", self.root, stem, suffix, exc)

    def _scan(self) -> None:
        """Pick up what a previous run left, so retention spans restarts."""
        stems: dict[str, int] = {}
        for path in self.root.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write cut short by a crash
                continue
            for suffix in _SUFFIXES:
                if path.name.endswith(suffix):
                    stem = path.name[: -len(suffix)]
                    stems[stem] = stems.get(stem, 0) + _size(path)
                    break
        for stem in sorted(stems):
            if (self.root / f"{stem}.json").exists():
                self._entries.append(_Entry(stem, stems[stem]))
                self._bytes += stems[stem]
            else:
                self._remove(stem)  # no sidecar: an entry that never finished
        if self._entries:
            logger.info(
                "archive %s: %d entries, %.1f MiB from earlier runs",
                self.root,
                len(self._entries),
                self._bytes / 2**20,
            )
        self._enforce_retention()


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _human(n: int) -> str:
    """
    >>> _human(512), _human(3 * 2**20), _human(5 * 2**30)
    ('512 B', '3.0 MiB', '5.0 GiB')
    """
    if n < 2**10:
        return f"{n} B"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
