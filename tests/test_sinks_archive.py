"""The image archive on the real filesystem: what it keeps, retention, the free-space floor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from servers import inspection, wait_until

from edge_sdk.records import Verdict
from edge_sdk.sinks import ArchiveSinkConfig, DeliveryConfig, SinkRunner, build_sink
from edge_sdk.sinks.archive import ArchiveSink


def archive(root: Path, **overrides: object) -> ArchiveSink:
    values: dict[str, object] = {"type": "archive", "root": root, "min_free_bytes": 0}
    sink = build_sink(ArchiveSinkConfig.model_validate({**values, **overrides}))
    assert isinstance(sink, ArchiveSink)
    return sink


def stems(root: Path) -> list[str]:
    return sorted(p.name[: -len(".json")] for p in root.glob("*.json"))


def test_rejects_are_kept_with_overlay_and_sidecar_and_every_nth_pass(tmp_path: Path) -> None:
    sink = archive(tmp_path / "a", ok_every=3)
    nok, err = inspection(1, Verdict.NOK), inspection(2, Verdict.ERROR)
    sink(nok)
    sink(err)
    for i in range(10, 17):  # 7 passes: the 1st, 4th and 7th are kept
        sink(inspection(i, Verdict.OK))
    kept = stems(sink.root)
    assert [s.rsplit("_", 2)[1:] for s in kept] == [
        ["000000000001", "NOK"],
        ["000000000002", "ERROR"],
        ["000000000010", "OK"],
        ["000000000013", "OK"],
        ["000000000016", "OK"],
    ]
    first = sink.root / kept[0]
    original = cv2.imread(f"{first}.png", cv2.IMREAD_UNCHANGED)
    assert np.array_equal(original, nok.frame.image)  # lossless
    overlay = cv2.imread(f"{first}.overlay.jpg")
    assert overlay.shape == nok.frame.image.shape
    sidecar = json.loads(Path(f"{first}.json").read_text())
    assert sidecar["verdict"] == "NOK" and sidecar["frame_id"] == 1
    assert sidecar["files"]["image"] == f"{kept[0]}.png"
    error_sidecar = json.loads((sink.root / f"{kept[1]}.json").read_text())
    assert error_sidecar["error"] == "model failed" and error_sidecar["score"] is None
    assert not list(sink.root.glob(".*"))  # no temporary files left


def test_retention_by_count_and_by_bytes_deletes_the_oldest(tmp_path: Path) -> None:
    sink = archive(tmp_path / "count", max_entries=3)
    for i in range(6):
        sink(inspection(i, Verdict.NOK))
    assert [s.rsplit("_", 2)[1] for s in stems(sink.root)] == [f"{i:012d}" for i in (3, 4, 5)]
    assert len(list(sink.root.iterdir())) == 9
    assert sink.stats()["deleted"] == 3

    probe = archive(tmp_path / "probe")
    probe(inspection(0, Verdict.NOK))
    entry = probe.stats()["bytes"]
    sink = archive(tmp_path / "bytes", max_bytes=int(entry * 2.5), max_entries=None)
    for i in range(6):
        sink(inspection(i, Verdict.NOK))
    on_disk = sum(p.stat().st_size for p in sink.root.iterdir())
    assert len(stems(sink.root)) == 2 and on_disk <= entry * 2.5
    assert on_disk == sink.stats()["bytes"]

    # A restart picks up what is there (and what a crash left half-written).
    (sink.root / ".20990101T000000.000000Z_cam0_000000000009_NOK.png.tmp").write_bytes(b"x")
    (sink.root / "20990101T000000.000000Z_cam0_000000000009_NOK.png").write_bytes(b"x")
    again = archive(sink.root, max_bytes=int(entry * 2.5), max_entries=None)
    assert again.stats()["entries"] == 2 and again.stats()["bytes"] == on_disk
    assert len(list(sink.root.iterdir())) == 6


def test_free_space_floor_stops_writing_and_degrades_health(tmp_path: Path) -> None:
    root = tmp_path / "floor"
    # A floor as large as the whole filesystem: its free space is always below it.
    floor = shutil.disk_usage(tmp_path).total
    sink = archive(root, min_free_bytes=floor)
    runner = SinkRunner(sink, delivery=DeliveryConfig(retry_deadline_s=5.0))
    runner.submit(inspection(1, Verdict.NOK))
    runner.submit(inspection(2, Verdict.ERROR))
    assert wait_until(lambda: runner.health().dropped == 2, timeout_s=5)
    h = runner.health()
    assert h.failed_attempts == 2  # not retried: waiting for space is not the runner's job
    assert h.dropped_rejects == 2 and h.state == "degraded"
    assert sink.stats()["skipped_low_space"] == 2
    assert "less than the floor of" in (sink.degraded_reason() or "")
    assert list(root.iterdir()) == []
    runner.close(timeout_s=1)


_FULL_DISK = """
import resource, signal, sys, time
sys.path.insert(0, sys.argv[2])
from servers import inspection
from edge_sdk.records import Verdict
from edge_sdk.sinks import ArchiveSinkConfig, DeliveryConfig, SinkRunner, build_sink

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail (EFBIG)
config = ArchiveSinkConfig.model_validate(
    {"type": "archive", "root": sys.argv[1], "min_free_bytes": 0}
)
runner = SinkRunner(build_sink(config), delivery=DeliveryConfig(retry_deadline_s=10))
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))  # no image fits on this "disk"
start = time.monotonic()
for i in range(5):
    runner.submit(inspection(i, Verdict.NOK, size=(120, 160)))
while runner.health().dropped < 5 and time.monotonic() - start < 30:
    time.sleep(0.01)
h = runner.health()
took = round(time.monotonic() - start, 2)
print(h.dropped, h.failed_attempts, took, runner.sink.degraded_reason())
runner.close(timeout_s=1)
"""


def test_a_full_disk_drops_entries_at_once_instead_of_retrying(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "archive"
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(root), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    dropped, attempts, seconds, reason = done.stdout.strip().split(" ", 3)
    assert (dropped, attempts) == ("5", "5"), done.stdout  # one attempt each, no retries
    assert float(seconds) < 2.0 and "is full" in reason
    assert not list(root.glob("*.json")) and not list(root.glob("*.png"))  # no half entries


def test_an_unusable_archive_root_is_a_config_error(tmp_path: Path) -> None:
    import pytest

    from edge_sdk.errors import ConfigError

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"cannot create archive root .*file/archive"):
        archive(tmp_path / "file" / "archive")
