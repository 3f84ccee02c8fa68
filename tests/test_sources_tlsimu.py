"""GenICam acquisition against TLSimu.cti, the simulator with a software trigger,
camera timestamps and sizes up to 4096x4096.

TLSimu ships in the genicam==1.5.0 wheel (not 1.6.0). The fixture takes it from
$EDGE_AD_TLSIMU (a folder with TLSimu.cti and libVirtualFG.so), else from the pytest
cache, else downloads that wheel once (about 3 MB) with pip; without network it skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("harvesters", reason="harvesters is not installed (pip install .[camera])")

from edge_sdk.sources import (
    CameraNotFoundError,
    CameraProfile,
    FrameTimeoutError,
    GenICamSource,
    SourceClosedError,
    list_cameras,
    select_camera,
)
from edge_sdk.sources.producers import ENV_VAR

FILES = ("TLSimu.cti", "libVirtualFG.so")  # the .cti loads the library from its own folder


@pytest.fixture(scope="session")
def tlsimu(request: pytest.FixtureRequest) -> Path:
    given = os.environ.get("EDGE_AD_TLSIMU")
    folder = Path(given) if given else Path(request.config.cache.mkdir("tlsimu"))
    if all((folder / name).is_file() for name in FILES):
        return folder / "TLSimu.cti"
    if given:
        pytest.skip(f"EDGE_AD_TLSIMU={given} lacks {' or '.join(FILES)}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "genicam==1.5.0",
                    "-d",
                    tmp,
                    "-q",
                ],
                check=True,
                capture_output=True,
                timeout=90,
            )
            (wheel,) = Path(tmp).glob("genicam-1.5.0-*.whl")
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            pytest.skip(f"TLSimu.cti unavailable: downloading genicam==1.5.0 failed ({exc})")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if Path(member).name in FILES:
                    (folder / Path(member).name).write_bytes(archive.read(member))
    if not all((folder / name).is_file() for name in FILES):
        pytest.skip("the genicam==1.5.0 wheel holds no TLSimu.cti for this platform")
    return folder / "TLSimu.cti"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def source(tlsimu: Path, **profile: object) -> GenICamSource:
    values = {"pixel_format": "Mono8", "width": 256, "height": 256, **profile}
    return GenICamSource(
        "serial:SN_InterfaceA_0",
        profile=CameraProfile.model_validate(values),
        producer_paths=[tlsimu],
        include_simulator=False,
        camera_id="tl",
    )


def test_listing_and_a_shared_user_name_is_refused(tlsimu: Path) -> None:
    cameras = list_cameras([tlsimu], include_simulator=False)
    assert [c.serial for c in cameras] == [
        "SN_InterfaceA_0",
        "SN_InterfaceA_1",
        "SN_InterfaceB_0",
        "SN_InterfaceB_1",
    ]
    assert {c.model for c in cameras} == {"TLSimuMono", "TLSimuColor"}
    assert {c.user_name for c in cameras} == {"Center"}
    with pytest.raises(CameraNotFoundError, match="'Center' is ambiguous: 4 cameras"):
        select_camera(cameras, "Center")
    assert select_camera(cameras, "SN_InterfaceB_1").index == 3


def test_software_trigger_delivers_one_frame_per_trigger(tlsimu: Path) -> None:
    with source(tlsimu, trigger={"mode": "software"}) as s:
        with pytest.raises(FrameTimeoutError):
            s.read(timeout_s=0.2)  # no trigger, no frame
        frames = []
        for _ in range(3):
            start = time.perf_counter()
            s.trigger()
            frames.append(s.read(timeout_s=2))
            assert time.perf_counter() - start < 0.5
        assert s.timestamp_source == "camera"
        assert s.profile.effective_buffer_handling == "oldest_first"
    ids = [f.frame_id for f in frames]
    assert ids == list(range(ids[0], ids[0] + 3))
    # Each frame has its own camera timestamp. Not checked: that they ascend. TLSimu's
    # timestamp wraps at one second (seen: 995,310,021 then 511,256 then 5,718,102 ns on a
    # loaded machine), so three triggers may straddle a wrap; frame ids give the order.
    stamps = [f.timestamp_ns for f in frames]
    assert len(set(stamps)) == 3
    assert frames[0].image.shape == (256, 256)


def test_triggered_parts_are_never_skipped(tlsimu: Path) -> None:
    with source(tlsimu, trigger={"mode": "software"}, num_buffers=8) as s:
        for _ in range(4):
            s.trigger()
            time.sleep(0.02)  # four parts pass before the consumer looks
        ids = [s.read(timeout_s=2).frame_id for _ in range(4)]
        assert ids == list(range(ids[0], ids[0] + 4))  # oldest first, all of them
        assert s.stats.lost == 0 and s.stats.skipped == 0


def test_newest_only_is_emulated_where_the_producer_lacks_it(tlsimu: Path) -> None:
    with source(tlsimu) as s:  # free run: newest-only by default
        fresh = s.read(timeout_s=2).frame_id
        # A loaded machine may slow the simulator down: pause until several frames queue.
        for _ in range(10):
            first, skipped = fresh, s.stats.skipped
            time.sleep(0.2)
            fresh = s.read(timeout_s=2).frame_id
            if fresh - first > 3:
                break
        assert fresh - first > 3  # the queued stale frames were handed back unread
        assert s.stats.skipped - skipped == fresh - first - 1


def test_decoded_by_the_delivered_format_not_the_requested_one(tlsimu: Path) -> None:
    with source(tlsimu, pixel_format="Mono12") as s:
        assert s.node_map.PixelFormat.value == "Mono12"  # accepted...
        frame = s.read(timeout_s=2)  # ...but the buffers still say Mono8
    assert frame.image.dtype == np.uint8 and frame.image.shape == (256, 256)


def test_close_frees_a_read_blocked_on_a_trigger_that_never_comes(tlsimu: Path) -> None:
    s = source(tlsimu, trigger={"mode": "software"})
    s.open()
    outcome: list[object] = []

    def reader() -> None:
        try:
            outcome.append(s.read(timeout_s=60))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.3)
    start = time.perf_counter()
    s.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.perf_counter() - start < 2
    assert isinstance(outcome[0], SourceClosedError)


def test_full_size_frame(tlsimu: Path) -> None:
    with source(tlsimu, width=4096, height=4096, trigger={"mode": "software"}) as s:
        s.trigger()
        frame = s.read(timeout_s=5)
    assert frame.image.shape == (4096, 4096) and frame.image.flags.c_contiguous


def test_the_calibration_profile_runs(tlsimu: Path) -> None:
    from edge_sdk.sources import load_profile

    prof = load_profile(
        Path(__file__).resolve().parents[1] / "calibration" / "tlsimu-software-trigger.yaml"
    )
    with GenICamSource("0", profile=prof, producer_paths=[tlsimu], include_simulator=False) as s:
        s.trigger()
        assert s.read(timeout_s=5).image.shape == (2048, 2448)


def test_hardware_trigger_names_the_sources_the_camera_has(tlsimu: Path) -> None:
    from edge_sdk.sources import FeatureError

    with pytest.raises(FeatureError, match="'TriggerSource' refuses 'Line0'; allowed: Software"):
        source(tlsimu, trigger={"mode": "hardware", "source": "Line0"}).open()
