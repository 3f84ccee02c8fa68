"""The unit file: `systemd-analyze verify` and its offline security score."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "edge-ad@.service"
analyze = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(analyze is None, reason="systemd-analyze not installed")


def instance(tmp_path: Path) -> Path:
    # verify checks that ExecStart exists: point it at this environment's edge-ad.
    edge_ad = Path(sys.executable).with_name("edge-ad")
    if not edge_ad.exists():
        pytest.skip(f"{edge_ad} not installed (pip install -e .)")
    text = UNIT.read_text().replace("/opt/edge-ad/.venv/bin/edge-ad", str(edge_ad))
    path = tmp_path / "edge-ad@line1.service"
    path.write_text(text)
    return path


def test_unit_verifies(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(analyze), "verify", str(instance(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "edge-ad" not in proc.stderr, proc.stderr  # no warnings about our unit


def test_unit_is_hardened(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(analyze), "security", "--offline=yes", str(instance(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.0, proc.stdout  # systemd calls <= 2.0 "OK"


def test_unit_is_type_notify_with_watchdog() -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text and re.search(r"^WatchdogSec=\d+", text, re.M)
    assert "edge-ad run --config /etc/edge-ad/%i.yaml" in text
