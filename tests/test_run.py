"""`edge-ad run` end to end, as a real process: the GenICam simulator as source, JSON
lines to a file, SIGTERM in the middle of a burst, and a PLC that dies mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk.sources.producers import simulator_path

pytest.importorskip("onnx")
from tiny_graphs import brightness_graph, write_tiny_bundle

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "edge_sdk"]


def parts(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        image = np.full((96, 128), 128, np.uint8)
        if i % 4 == 0:
            image[20:60, 30:90] = 255
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return folder


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_on_the_simulated_camera(tmp_path: Path) -> None:
    if simulator_path() is None:
        pytest.skip("the genicam wheel's viky.cti simulator is not installed")
    bundle = write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    line = tmp_path / "line.yaml"
    line.write_text(
        f"camera: cam0\ncameras: {{cam0: '0'}}\nprofile: {REPO / 'calibration/viky-mono8.yaml'}\n"
        "bundle: t.bundle\ndevice: cpu\nhealth: {port: 0}\n"
        "sinks: [{type: jsonl, path: results.jsonl}]\n"
    )
    proc = subprocess.run(
        [*CLI, "run", "--config", str(line), "--max-frames", "15", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    lines = read_lines(tmp_path / "results.jsonl")
    assert summary["results"] >= 15 and len(lines) == summary["results"]
    assert summary["frames"] == summary["results"] + summary["dropped_free_run"]
    assert {r["camera"] for r in lines} == {"cam0"}
    # viky shows a white field with a black square: the brightness model passes it.
    assert {r["verdict"] for r in lines} == {"NOK"} or "OK" in {r["verdict"] for r in lines}
    assert bundle.exists()


def test_sigterm_mid_burst_gives_every_frame_one_result(tmp_path: Path) -> None:
    write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    line = tmp_path / "line.yaml"
    line.write_text(
        f"source: folder\nfolder: {{path: {parts(tmp_path / 'in', 8)}, rate_hz: 400, loop: true}}\n"
        "bundle: t.bundle\ndevice: cpu\nhealth: {enabled: false}\n"
        "sinks: [{type: jsonl, path: results.jsonl}]\n"
    )
    proc = subprocess.Popen(
        [*CLI, "run", "--config", str(line), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    results = tmp_path / "results.jsonl"
    while time.monotonic() < deadline and (
        not results.exists() or len(results.read_text().splitlines()) < 50
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    lines = read_lines(results)
    ids = [r["frame_id"] for r in lines]
    assert len(lines) == summary["results"] == summary["frames"] >= 50  # stopped mid-run
    assert sorted(ids) == list(range(len(ids)))  # one result per frame, none missing
    rejects = [r for r in lines if r["verdict"] != "OK"]
    assert rejects and all(r["frame_id"] % 8 % 4 == 0 or r["verdict"] == "ERROR" for r in rejects)


def test_plc_stops_answering_mid_run(tmp_path: Path) -> None:
    """The PLC dies: inspection goes on, every result still reaches the JSON lines, the
    Modbus sink's failures are counted and its health shows it."""
    pytest.importorskip("pymodbus")
    from servers import ModbusPLC

    plc = ModbusPLC().start()
    write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    line = tmp_path / "line.yaml"
    line.write_text(
        f"source: folder\nfolder: {{path: {parts(tmp_path / 'in', 8)}, rate_hz: 50, loop: true}}\n"
        "bundle: t.bundle\ndevice: cpu\nhealth: {enabled: false}\ndrain_timeout_s: 2\n"
        "sinks:\n"
        "  - {type: jsonl, path: results.jsonl}\n"
        f"  - {{type: modbus, host: 127.0.0.1, port: {plc.port}, timeout_s: 0.2,\n"
        "     delivery: {retry_deadline_s: 0.5, queue_size: 16}}\n"
    )
    proc = subprocess.Popen(
        [*CLI, "run", "--config", str(line), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The PLC dies once results flow (a loaded machine may take seconds to start the run).
    results = tmp_path / "results.jsonl"
    flowing = time.monotonic() + 60
    while time.monotonic() < flowing and (
        not results.exists() or results.read_bytes().count(b"\n") < 10
    ):
        time.sleep(0.1)
    time.sleep(2)
    plc.stop()
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    lines = read_lines(results)
    assert len(lines) == summary["results"] == summary["frames"]
    assert sorted(r["frame_id"] for r in lines) == list(range(len(lines)))
    modbus = summary["sinks"]["modbus"]
    assert modbus["delivered"] > 0
    assert modbus["failed_attempts"] > 0 or modbus["dropped"] > 0
    assert modbus["state"] != "ok"


def test_line_from_python_example(tmp_path: Path) -> None:
    if simulator_path() is None:
        pytest.skip("the genicam wheel's viky.cti simulator is not installed")
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "line_from_python.py"), "--seconds", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},  # no demo bundle: the stand-in
    )
    assert proc.returncode == 0, proc.stderr
    assert "stand-in.bundle" in proc.stdout
    assert "on-demand check of a white image: NOK" in proc.stdout
    inspected = re.search(r"(\d+) frames, (\d+) inspected \((\d+) replaced", proc.stdout)
    assert inspected, proc.stdout
    frames, results, replaced = map(int, inspected.groups())
    assert frames > 0 and results + replaced <= frames and results > 0


def test_camera_line_sink_names_the_missing_feature(tmp_path: Path) -> None:
    """viky has no I/O lines: the start fails before READY, naming the feature."""
    if simulator_path() is None:
        pytest.skip("the genicam wheel's viky.cti simulator is not installed")
    write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    line = tmp_path / "line.yaml"
    line.write_text(
        f"camera: '0'\nprofile: {REPO / 'calibration/viky-mono8.yaml'}\n"
        "bundle: t.bundle\ndevice: cpu\nhealth: {enabled: false}\n"
        "sinks: [{type: camera_line, line: Line1, pulse_ms: 5}]\n"
    )
    proc = subprocess.run(
        [*CLI, "run", "--config", str(line), "--max-frames", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stderr
    assert "camera 0 has no feature 'LineSelector'" in proc.stderr


def test_camera_line_sink_needs_a_camera(tmp_path: Path) -> None:
    write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    line = tmp_path / "line.yaml"
    line.write_text(
        f"source: folder\nfolder: {{path: {parts(tmp_path / 'in', 2)}}}\n"
        "bundle: t.bundle\ndevice: cpu\nhealth: {enabled: false}\n"
        "sinks: [{type: camera_line}]\n"
    )
    proc = subprocess.run(
        [*CLI, "run", "--config", str(line)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 4
    assert "camera_line sink needs the line's GenICam camera" in proc.stderr


@pytest.mark.parametrize("trouble", ["busy health port", "archive root under a file"])
def test_a_resource_the_line_needs_fails_the_start_clearly(tmp_path: Path, trouble: str) -> None:
    import socket

    write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    parts(tmp_path / "in", 2)
    (tmp_path / "file").write_text("not a folder")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    health, sinks = "{port: 0}", "[{type: jsonl, path: results.jsonl}]"
    if trouble == "busy health port":
        health = f"{{port: {busy.getsockname()[1]}}}"
    else:
        sinks = "[{type: archive, root: file/archive}]"
    line = tmp_path / "line.yaml"
    line.write_text(
        f"source: folder\nfolder: {{path: in}}\nbundle: t.bundle\ndevice: cpu\n"
        f"health: {health}\nsinks: {sinks}\n"
    )
    try:
        proc = subprocess.run(
            [*CLI, "run", "--config", str(line)], capture_output=True, text=True, timeout=120
        )
    finally:
        busy.close()
    assert proc.returncode == 4, proc.stderr  # a failed start, never 1 (that reads as NOK)
    assert "Traceback" not in proc.stderr, proc.stderr
    expected = "cannot listen on 127.0.0.1" if "port" in trouble else "cannot create archive root"
    assert expected in proc.stderr, proc.stderr


def test_a_run_whose_verdicts_were_all_error_says_so(tmp_path: Path) -> None:
    write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    parts(tmp_path / "in", 4)
    line = tmp_path / "line.yaml"
    line.write_text(
        "source: folder\nfolder: {path: in}\nbundle: t.bundle\ndevice: cpu\n"
        "mode: free_run\ndeadline_ms: 0.001\nhealth: {enabled: false}\n"
        "sinks: [{type: jsonl, path: r.jsonl}]\n"
    )
    proc = subprocess.run(
        [*CLI, "run", "--config", str(line)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr  # a service: the verdicts went to the line
    assert "WARNING: every verdict was ERROR (" in proc.stderr
    assert "of them deadline misses" in proc.stderr


def test_a_deadline_the_model_cannot_meet_fails_the_start(tmp_path: Path) -> None:
    write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    parts(tmp_path / "in", 2)
    line = tmp_path / "line.yaml"
    line.write_text(
        "source: folder\nfolder: {path: in}\nbundle: t.bundle\ndevice: cpu\n"
        "deadline_ms: 0.0001\nhealth: {enabled: false}\n"
    )
    proc = subprocess.run(
        [*CLI, "run", "--config", str(line)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 4, proc.stderr  # before READY, not a line of ERRORs
    assert "more than deadline_ms 0.0001: every part would be rejected as ERROR" in proc.stderr


def test_a_folder_that_runs_out_ends_without_a_fault(tmp_path: Path) -> None:
    # The end of a finite source is the end of the run, not "inspection has stopped".
    write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    folder = str(parts(tmp_path / "in", 3))
    proc = subprocess.run(
        [*CLI, "run", "--folder", folder, "--bundle", "t.bundle", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert "3 frames" in proc.stderr
    assert "unhealthy" not in proc.stderr and "ERROR edge_sdk" not in proc.stderr, proc.stderr
