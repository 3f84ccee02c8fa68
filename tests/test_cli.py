"""The `edge-ad` command line, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import data_set

CLI = [sys.executable, "-m", "edge_sdk"]


def run(*args: str, check_rc: int | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc


def test_inspect_real_images_writes_overlays_and_results(s_bundle: Path, tmp_path: Path) -> None:
    tiles = data_set("magnetic_tile")
    picks = [
        *sorted((tiles / "test" / "good").glob("*.jpg"))[:2],
        *sorted((tiles / "test" / "blowhole").glob("*.jpg"))[:2],
    ]
    folder = tmp_path / "in"
    folder.mkdir()
    for p in picks[2:]:
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    proc = run(
        "inspect",
        "--bundle",
        str(s_bundle),
        "--device",
        "cpu",
        "--out",
        str(out),
        str(picks[0]),
        str(picks[1]),
        str(folder),
    )
    assert proc.returncode in (0, 1), proc.stderr  # random weights: OK or NOK, never ERROR
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4
    for record, src in zip(records, [picks[0], picks[1], *sorted(folder.iterdir())], strict=True):
        assert record["path"] == str(src)
        assert record["verdict"] in ("OK", "NOK") and isinstance(record["score"], float)
        assert record["latency_ms"]["total"] > 0
        overlay = cv2.imread(str(out / record["overlay"]))
        original = cv2.imread(str(src), cv2.IMREAD_ANYCOLOR)
        assert overlay.shape[:2] == original.shape[:2]  # each image at its own size
    assert "4 images" in proc.stderr
    expected_rc = 1 if any(r["verdict"] == "NOK" for r in records) else 0
    assert proc.returncode == expected_rc


def test_inspect_json_and_unreadable_file(s_bundle: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((100, 120), 128, np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    proc = run(
        "inspect",
        "--bundle",
        str(s_bundle),
        "--device",
        "cpu",
        "--json",
        str(good),
        str(broken),
        check_rc=3,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in lines] == [str(good), str(broken)]
    assert lines[1]["verdict"] == "ERROR" and "cannot read image" in lines[1]["error"]


def test_inspect_missing_input_is_a_clear_failure(s_bundle: Path, tmp_path: Path) -> None:
    proc = run("inspect", "--bundle", str(s_bundle), str(tmp_path / "nope"), check_rc=4)
    assert "nope: no such image file or folder" in proc.stderr


def test_inspect_corrupt_bundle_fails_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bundle"
    bad.write_bytes(b"garbage")
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((10, 10), np.uint8))
    proc = run("inspect", "--bundle", str(bad), str(image), check_rc=4)
    assert "bad.bundle" in proc.stderr and "not a bundle" in proc.stderr


def test_usage_error_exit_code() -> None:
    assert run("inspect").returncode == 2
    # Options that do not go together are usage errors too, whatever finds them.
    grab = run("cameras", "--grab", check_rc=2)
    assert "need --camera SELECTOR" in grab.stderr


def test_run_without_a_bundle_says_what_to_pass() -> None:
    proc = run("run", check_rc=4)
    assert "pass --bundle B.bundle" in proc.stderr and "edge-ad run --demo" in proc.stderr


def test_bundle_info_and_verify(s_bundle: Path) -> None:
    info = json.loads(run("bundle", "info", str(s_bundle), "--json", check_rc=0).stdout)
    assert info["architecture"] == "efficientad-s" and info["name"] == "random-s"
    text = run("bundle", "info", str(s_bundle), check_rc=0).stdout
    assert "threshold" in text and "efficientad-s" in text
    assert "map weights st 0.5, ae 0.5" in text
    # Six calibration images cannot resolve 1 %: the target, its interval and the warning.
    assert "target      false-reject rate 0.01 on 6 good images, expected" in text
    assert "WARNING     too few good images" in text and "cannot resolve" in text
    verify = run("bundle", "verify", str(s_bundle), check_rc=0).stdout
    assert "bundle is valid" in verify


def test_bundle_verify_reports_tampering(rebundle) -> None:
    path = rebundle(files={"model.onnx": b"tampered"})
    proc = run("bundle", "verify", str(path), check_rc=4)
    assert "sha256" in proc.stderr


def test_doctor() -> None:
    report = json.loads(run("doctor", "--json", check_rc=0).stdout)
    assert "CPUExecutionProvider" in json.dumps(report)
    assert run("doctor", check_rc=0).stdout.strip()


@pytest.mark.parametrize("module", ["torch", "onnxruntime", "cv2", "harvesters"])
def test_import_is_light(module: str) -> None:
    code = f"import edge_sdk, sys; print({module!r} in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_public_surface_is_pinned() -> None:
    import edge_sdk

    assert sorted(edge_sdk.__all__) == sorted(
        [
            "Bundle",
            "BundleError",
            "BundleIntegrityError",
            "ConfigError",
            "EdgeADError",
            "Engine",
            "EngineError",
            "EngineOptions",
            "Frame",
            "Inspector",
            "Latency",
            "Manifest",
            "MissingDependencyError",
            "Result",
            "Verdict",
            "__version__",
            "write_bundle",
        ]
    )
    for name in edge_sdk.__all__:
        assert getattr(edge_sdk, name) is not None


def test_run_takes_the_engine_flags_and_leaves_the_file_its_say(tmp_path: Path) -> None:
    # One declaration of the engine flags (runtime/options.py) for every command that opens
    # an engine; for `run` they override line.yaml only when given.
    from edge_sdk.cli import build_parser
    from edge_sdk.line.commands import run_overrides
    from edge_sdk.line.config import load_config

    line = tmp_path / "line.yaml"
    line.write_text("bundle: b.bundle\ndevice: cpu\nthreads: 3\nrecheck: true\n")
    parser = build_parser()
    given = parser.parse_args(
        ["run", "--config", str(line), "--variant", "int8", "--threads", "1", "--no-recheck"]
    )
    config, _ = load_config(given.config, overrides=run_overrides(given))
    engine = config.engine
    assert (engine.device, engine.variant, engine.threads, config.recheck) == (
        "cpu",
        "int8",
        1,
        False,
    )
    plain = parser.parse_args(["run", "--config", str(line)])
    config, _ = load_config(plain.config, overrides=run_overrides(plain))
    engine = config.engine
    assert (engine.device, engine.variant, engine.threads, config.recheck) == ("cpu", None, 3, True)
    calibrate = parser.parse_args(["calibrate", "--bundle", "b", "--good", "g", "--out", "o"])
    inspect = parser.parse_args(["inspect", "--bundle", "b", "x.png"])
    assert calibrate.device == inspect.device == "auto"
