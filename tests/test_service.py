"""The line service: sd_notify over a real socket, the health endpoint over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk.line.config import load_config
from edge_sdk.line.notify import Notifier
from edge_sdk.line.service import run_line

pytest.importorskip("onnx")
from tiny_graphs import brightness_graph, write_tiny_bundle


@pytest.fixture()
def notify_socket(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(0.1)
    messages: list[str] = []
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                continue

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    yield path, messages
    stop.set()
    thread.join()
    sock.close()


def images(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        image = np.full((96, 128), 128, np.uint8)
        if i % 2:
            image[20:60, 30:90] = 255
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return folder


def test_notify_protocol_on_a_real_socket(notify_socket, tmp_path: Path) -> None:
    path, messages = notify_socket
    bundle = write_tiny_bundle(tmp_path / "t.bundle", brightness_graph())
    config, _ = load_config(
        None,
        environ={},
        overrides={
            "bundle": str(bundle),
            "source": "folder",
            "sinks": [],
            "folder": {"path": str(images(tmp_path / "in", 4)), "rate_hz": 20, "loop": True},
            "health": {"enabled": False},
            "summary_every_s": 0.2,
        },
    )
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "600000"})
    assert notifier.watchdog_interval_s == 0.6
    summary = run_line(config, stop=threading.Event(), notifier=notifier, duration_s=1.5)
    time.sleep(0.3)
    assert messages[0].startswith("READY=1")
    assert messages.count("WATCHDOG=1") >= 3
    assert any(m.startswith("STATUS=") and "frames" in m for m in messages)
    assert "STOPPING=1" in messages
    assert messages.index("STOPPING=1") > messages.index("WATCHDOG=1")
    snap = summary.snapshot
    assert snap.frames == snap.results > 10 and summary.failed is None


def test_no_watchdog_ping_when_nothing_flows(notify_socket, tmp_path: Path) -> None:
    """A pipeline whose source delivers nothing and whose loop is stuck must not ping."""
    path, messages = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "300000"})
    from edge_sdk import Inspector
    from edge_sdk.line.pipeline import Pipeline
    from edge_sdk.line.service import _supervise
    from edge_sdk.sources.files import FolderSource

    inspector = Inspector.open(
        write_tiny_bundle(tmp_path / "t.bundle", brightness_graph()), device="cpu"
    )
    pipeline = Pipeline(FolderSource(images(tmp_path / "in", 1)), inspector, [])
    pipeline._last_progress = time.monotonic() - 60  # as if both threads hung a minute ago
    config, _ = load_config(None, environ={}, overrides={"bundle": "x"})
    _supervise(pipeline, config, notifier, threading.Event(), time.monotonic(), 1.0, None)
    time.sleep(0.2)
    assert "WATCHDOG=1" not in messages


def test_notifier_outside_systemd_is_silent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.ready() and notifier.watchdog_interval_s is None


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def test_health_endpoint(tmp_path: Path) -> None:
    from edge_sdk import Inspector
    from edge_sdk.line.health import HealthServer
    from edge_sdk.line.pipeline import Pipeline
    from edge_sdk.sources.files import FolderSource

    inspector = Inspector.open(
        write_tiny_bundle(tmp_path / "t.bundle", brightness_graph()), device="cpu"
    )
    source = FolderSource(images(tmp_path / "in", 6), rate_hz=50, loop=True)
    with Pipeline(source, inspector, []) as pipeline:
        server = HealthServer(pipeline, port=0)
        server.start()
        base = "http://{}:{}".format(*server.address)
        try:
            code, body, _ = get(base + "/overlay.jpg")
            deadline = time.monotonic() + 10
            while code == 404 and time.monotonic() < deadline:
                time.sleep(0.05)
                code, body, _ = get(base + "/overlay.jpg")
            assert code == 200 and body[:2] == b"\xff\xd8"
            time.sleep(0.3)
            code, body, kind = get(base + "/metrics")
            text = body.decode()
            assert code == 200 and kind.startswith("text/plain")
            assert 'edge_ad_results_total{verdict="NOK"}' in text
            assert 'edge_ad_latency_ms{stage="infer",quantile="p99"}' in text
            status = json.loads(get(base + "/status")[1])
            assert status["healthy"] and status["frames"] > 0
            assert status["verdicts"]["OK"] > 0 and status["verdicts"]["NOK"] > 0
            assert get(base + "/healthz")[0] == 200
            assert get(base + "/nope")[0] == 404
        finally:
            server.close()


def test_a_demo_starts_fresh_and_keeps_the_last_one_aside(tmp_path: Path) -> None:
    from edge_sdk.tools.demo import fresh_output

    out = tmp_path / "demo"
    assert fresh_output(out) is None  # nothing yet
    (out / "archive").mkdir(parents=True)
    (out / "results.jsonl").write_text("{}\n")
    assert fresh_output(out) == tmp_path / "demo.previous" and not out.exists()
    out.mkdir()
    (out / "results.jsonl").write_text("{}\n{}\n")
    fresh_output(out)  # the one before goes
    assert (tmp_path / "demo.previous" / "results.jsonl").read_text() == "{}\n{}\n"
