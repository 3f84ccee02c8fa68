"""FolderSource and VideoSource on real files written by OpenCV."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk.records import Frame
from edge_sdk.sources import (
    EndOfStreamError,
    FolderSource,
    FrameTimeoutError,
    SourceClosedError,
    SourceError,
    VideoSource,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "a_grey.png"), rng.integers(0, 256, (20, 30), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "b_colour.png"), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "c_deep.png"), rng.integers(0, 65535, (20, 30), dtype=np.uint16))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_replays_images_as_stored(folder: Path) -> None:
    with FolderSource(folder, camera_id="replay") as source:
        frames = list(source.frames())
        assert source.stats.frames == 3
    assert [f.part_id for f in frames] == ["a_grey.png", "b_colour.png", "c_deep.png"]
    assert [f.image.shape for f in frames] == [(20, 30), (20, 30, 3), (20, 30)]
    assert all(f.image.dtype == np.uint8 for f in frames)  # 16-bit files come out 8-bit
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert all(isinstance(f, Frame) and f.camera_id == "replay" for f in frames)
    np.testing.assert_array_equal(frames[1].image, cv2.imread(str(folder / "b_colour.png")))


def test_folder_end_loop_and_rate(folder: Path) -> None:
    with FolderSource(folder) as source:
        for _ in range(3):
            source.read()
        with pytest.raises(EndOfStreamError):
            source.read()
    start = time.perf_counter()
    with FolderSource(folder, loop=True, rate_hz=50) as source:
        ids = [source.read(timeout_s=1).frame_id for _ in range(7)]
    elapsed = time.perf_counter() - start
    assert ids == list(range(7))  # ids keep counting across loops
    assert 0.10 <= elapsed < 1.0  # six periods of 20 ms at least


def test_folder_timeout_and_stop_from_another_thread(folder: Path) -> None:
    with FolderSource(folder, rate_hz=0.5, loop=True) as source:
        source.read()
        start = time.perf_counter()
        with pytest.raises(FrameTimeoutError):
            source.read(timeout_s=0.05)
        assert time.perf_counter() - start < 0.5
        assert source.stats.timeouts == 1
        threading.Timer(0.2, source.stop).start()
        start = time.perf_counter()
        assert list(source.frames()) == []  # the next image is due in 2 s; stop ends it
        assert time.perf_counter() - start < 1.0
        with pytest.raises(SourceClosedError):
            source.read()


def test_folder_errors_name_the_file(tmp_path: Path, folder: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        FolderSource(tmp_path / "empty").open()
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "missing").open()
    broken = folder / "d_broken.png"
    broken.write_bytes(b"not a png")
    with FolderSource(folder) as source, pytest.raises(SourceError, match=r"d_broken\.png"):
        for _ in range(4):
            source.read()
    with FolderSource([folder / "b_colour.png"]) as source:
        assert source.read().image.shape == (20, 30, 3)
    with pytest.raises(ValueError, match="rate_hz"):
        FolderSource(folder, rate_hz=0)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    assert writer.isOpened()
    for k in range(10):
        writer.write(np.full((24, 32, 3), k * 20, np.uint8))
    writer.release()
    return path


def test_video_file_frames_end_and_loop(video: Path) -> None:
    with VideoSource(video) as source:
        frames = list(source.frames())
    assert len(frames) == 10
    assert frames[0].image.shape == (24, 32, 3) and frames[0].image.dtype == np.uint8
    assert [f.frame_id for f in frames] == list(range(10))
    assert abs(int(frames[5].image.mean()) - 100) <= 3  # the right frame, in order
    with VideoSource(str(video), loop=True, camera_id="clip") as source:
        looped = [source.read(timeout_s=1) for _ in range(15)]
    assert [f.frame_id for f in looped] == list(range(15))
    assert looped[0].camera_id == "clip"


def test_video_open_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        VideoSource(tmp_path / "nope.mp4").open()
    start = time.perf_counter()
    with pytest.raises(SourceError, match="cannot open"):
        # A closed port on loopback: refused at once, bounded by open_timeout_s anyway.
        VideoSource("rtsp://127.0.0.1:9/stream", open_timeout_s=2).open()
    assert time.perf_counter() - start < 5
    with pytest.raises(SourceError, match="cannot open"):
        VideoSource(97).open()  # no such webcam


def test_the_folder_source_reads_every_suffix_training_reads(tmp_path: Path) -> None:
    # One suffix list for every part: the folder source once skipped .webp, which
    # training and evaluation read.
    from edge_sdk.images import IMAGE_SUFFIXES

    assert ".webp" in IMAGE_SUFFIXES
    cv2.imwrite(str(tmp_path / "a.webp"), np.full((8, 8), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "b.PNG"), np.full((8, 8), 50, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "c.png"), np.zeros((8, 8), np.uint8))  # not recursive
    with FolderSource(tmp_path) as source:
        parts = [frame.part_id for frame in source.frames()]
    assert parts == ["a.webp", "b.PNG"]
