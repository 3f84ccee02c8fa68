"""The README's Python snippet runs as printed: on a readable part, and on a file that
cannot be read (an ERROR verdict, which every helper must take)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnx")
from tiny_graphs import brightness_graph, write_tiny_bundle

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippet() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python API section has no python block"
    return match.group(1)


@pytest.mark.parametrize("part", ["defective", "unreadable"])
def test_the_readme_snippet_runs_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], part: str
) -> None:
    code = python_snippet()
    bundle = re.search(r'Inspector\.open\("([^"]+)"', code)
    image = re.search(r'cv2\.imread\("([^"]+)"', code)
    assert bundle and image
    write_tiny_bundle(tmp_path / bundle.group(1), brightness_graph())
    if part == "defective":
        picture = np.full((96, 128), 128, np.uint8)
        picture[20:60, 30:90] = 255  # NOK for the brightness model
        cv2.imwrite(str(tmp_path / image.group(1)), picture)
    else:
        (tmp_path / image.group(1)).write_bytes(b"not a png")  # imread gives None
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert ("Verdict.NOK" if part == "defective" else "Verdict.ERROR") in out
    assert os.path.getsize(tmp_path / "reject.jpg") > 0
