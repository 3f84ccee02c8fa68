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


def _compare(files: list[Path]) -> list[dict[str, object]]:
    """The script's rows (``--json``) for two files; it must succeed."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, files), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[dict[str, object]] = json.loads(out.stdout)["rows"]
    return rows


def _refused(files: list[Path]) -> str:
    """The script's error for two files it must refuse."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, files)], capture_output=True, text=True
    )
    assert out.returncode != 0
    return out.stderr


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
    rows = {r["defects"]: r for r in _compare(files)}
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
    assert "different images" in _refused(files)


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
    (got,) = _compare(files)
    a, b = a_rows[0]["scores"], b_rows[0]["scores"]
    want = auroc_difference(
        a["test_good"], a["test_defective"], b["test_good"], b["test_defective"]
    )
    assert got["data"] == "tile" and got["good"] == 9 and got["defective"] == 7
    assert got["difference"] == pytest.approx(want["difference"], abs=1e-12)


def test_an_eval_report_pairs_with_stored_score_lists_by_position(tmp_path: Path) -> None:
    # A bundle that did not outlive its machine left threshold_policies.py's output; a new
    # bundle's eval report of the same set pairs with it in the test set's order.
    rng = np.random.default_rng(2)
    parts = [(f"test/good/{i}.png", None) for i in range(8)]
    parts += [(f"test/crack/{i}.png", "crack") for i in range(6)]
    parts.insert(3, parts.pop())  # defective and good images interleaved, as a set lists them
    new = [(p, t, float(rng.normal(1.0 if t else 0.0))) for p, t in parts]
    old_good, old_bad = rng.normal(0, 1, 8).tolist(), rng.normal(0.5, 1, 6).tolist()
    files = [tmp_path / "report.json", tmp_path / "stored.json"]
    files[0].write_text(json.dumps(_report("/data/magnetic_tile", new)))
    stored = {"data": "magnetic_tile", "scores": {"test_good": old_good, "test_defective": old_bad}}
    files[1].write_text(json.dumps({"bundle": "gone.bundle", **stored}))
    (got,) = _compare(files)
    want = auroc_difference(
        [s for _, t, s in new if t is None], [s for _, t, s in new if t], old_good, old_bad
    )
    assert got["data"] == "magnetic_tile" and got["defects"] == "all defects"
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    # One image fewer in the stored lists: not the same test set.
    stored["scores"]["test_defective"] = old_bad[:-1]
    files[1].write_text(json.dumps(stored))
    assert "different images" in _refused(files)
