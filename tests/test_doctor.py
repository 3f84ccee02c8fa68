"""`edge-ad doctor`: the real checks on this machine, and a report that never crashes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_sdk.sources.producers import ENV_VAR, simulator_path
from edge_sdk.tools import doctor
from edge_sdk.tools.doctor import collect, format_report

NO_VENDOR_PRODUCER = "no GenTL producer other than the simulator"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_collect_reports_this_machine() -> None:
    report = collect()
    assert json.loads(json.dumps(report)) == report  # plain data only

    assert report["python"]["version"].count(".") == 2
    for name in ("numpy", "opencv", "onnxruntime", "pydantic"):
        assert report["packages"][name] not in ("", "missing")

    ort = report["onnxruntime"]
    assert "CPUExecutionProvider" in ort["available_providers"]
    assert ort["preferred"]["CPUExecutionProvider"] is True
    assert set(ort["preferred"]) == set(doctor.PREFERRED_PROVIDERS)

    sim = simulator_path()
    assert {"path": str(sim), "origin": "simulator"} in report["camera"]["producers"]
    assert NO_VENDOR_PRODUCER in " ".join(report["problems"])

    gpu = report["gpu"]
    assert isinstance(gpu["device_nodes"], list)
    if gpu["nvidia_smi"] is None:
        assert gpu["gpus"] == []  # this machine has no NVIDIA driver
    assert all(isinstance(p, str) for p in report["problems"])


def test_gpu_provider_problem_matches_the_providers() -> None:
    report = collect()
    has_gpu_ep = any(report["onnxruntime"]["preferred"][p] for p in doctor.PREFERRED_PROVIDERS[:2])
    mentioned = any("edge-ad[gpu]" in p for p in report["problems"])
    assert mentioned is not has_gpu_ep


def test_a_vendor_producer_clears_the_problem(tmp_path: Path, monkeypatch) -> None:
    sim = simulator_path()
    assert sim is not None
    shutil.copy(sim, tmp_path / "acme.cti")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    report = collect()
    assert report["camera"]["producers"][0] == {
        "path": str(tmp_path / "acme.cti"),
        "origin": "GENICAM_GENTL64_PATH",
    }
    assert NO_VENDOR_PRODUCER not in " ".join(report["problems"])


def test_format_report_shows_providers_producers_and_problems() -> None:
    report = collect()
    text = format_report(report)
    assert "CPUExecutionProvider" in text
    assert "viky.cti" in text
    assert "simulator" in text
    assert NO_VENDOR_PRODUCER in text
    assert report["python"]["version"] in text


@pytest.mark.parametrize(
    "partial",
    [
        {},
        {"onnxruntime": {"error": "ImportError: broken"}, "problems": ["x"]},
        {"camera": {"error": "OSError: boom"}, "gpu": {"nvidia_smi_error": "timeout"}},
    ],
)
def test_format_report_tolerates_partial_reports(partial: dict) -> None:
    text = format_report(partial)
    for value in ("broken", "boom", "timeout"):
        if value in json.dumps(partial):
            assert value in text


def test_a_failing_check_becomes_a_problem_not_a_crash() -> None:
    problems: list[str] = []

    def broken() -> dict:
        raise OSError("no such device")

    section = doctor._guard(broken, problems, "GenTL producers")
    assert section == {"error": "OSError: no such device"}
    assert problems == ["checking GenTL producers failed: OSError: no such device"]
