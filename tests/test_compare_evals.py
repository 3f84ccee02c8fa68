"""benchmarks/compare_evals.py: two eval reports of one test set, paired by image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.statistics import auroc_difference

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_evals.py"


def _report(root: str, parts: list[tuple[str, str | None, float]]) -> dict[str, object]:
    images = [{"path": f"{root}/{p}", "defect_type": t, "score": s} for p, t, s in parts]
    return {"data": {"path": root}, "images": images}


def test_reports_pair_by_image_within_the_data_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = [(f"test/good/{i}.png", None) for i in range(12)]
    names += [(f"test/crack/{i}.png", "crack") for i in range(6)]
    names += [(f"test/hole/{i}.png", "hole") for i in range(5)]
    a = [(n, t, float(rng.normal(1.0 if t else 0.0))) for n, t in names]
    b = [(n, t, s + float(rng.normal(0, 0.5))) for n, t, s in a]
    # The same set given as two different paths, and the images in another order.
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    files[0].write_text(json.dumps(_report("/x/../data/set", a)))
    files[1].write_text(json.dumps(_report("/data/set", b[::-1])))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, files), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {r["defects"]: r for r in json.loads(out.stdout)["rows"]}
    assert set(rows) == {"all defects", "crack", "hole"}
    good = [k for k, (_, t, _) in enumerate(a) if t is None]
    for name, bad in (
        ("all defects", [k for k, (_, t, _) in enumerate(a) if t]),
        ("hole", [k for k, (_, t, _) in enumerate(a) if t == "hole"]),
    ):
        want = auroc_difference(
            [a[k][2] for k in good],
            [a[k][2] for k in bad],
            [b[k][2] for k in good],
            [b[k][2] for k in bad],
        )
        for key, value in want.items():
            assert rows[name][key] == pytest.approx(value, abs=1e-12), (name, key)


def test_reports_of_other_images_are_refused(tmp_path: Path) -> None:
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    files[0].write_text(json.dumps(_report("/d", [("g1", None, 0.1), ("b1", "x", 0.9)])))
    files[1].write_text(json.dumps(_report("/d", [("g2", None, 0.1), ("b1", "x", 0.9)])))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, files)], capture_output=True, text=True
    )
    assert out.returncode != 0 and "different images" in out.stderr


def test_feature_knn_results_pair_row_by_row_for_the_sets_both_hold(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)

    def row(data: str, shift: float) -> dict[str, object]:
        scores = {"test_good": rng.normal(0, 1, 9).tolist(), "test_defective": []}
        scores["test_defective"] = (rng.normal(1, 1, 7) + shift).tolist()
        return {"data": data, "scores": scores}

    a_rows, b_rows = [row("tile", 0.0), row("only_a", 0.0)], [row("tile", 0.5)]
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    for f, rows in zip(files, (a_rows, b_rows), strict=True):
        f.write_text(json.dumps({"rows": rows}))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, files), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (got,) = json.loads(out.stdout)["rows"]
    a, b = a_rows[0]["scores"], b_rows[0]["scores"]
    want = auroc_difference(
        a["test_good"], a["test_defective"], b["test_good"], b["test_defective"]
    )
    assert got["data"] == "tile" and got["good"] == 9 and got["defective"] == 7
    assert got["difference"] == pytest.approx(want["difference"], abs=1e-12)
