"""`edge-ad eval` on a generated MVTec-layout data set (tiny brightness bundle: every score
is known in closed form) and on a handful of real magnetic-tile images."""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import data_set

from edge_sdk.evaluation import report
from edge_sdk.evaluation.commands import add_eval_parser
from edge_sdk.evaluation.report import evaluate_bundle, format_summary
from edge_sdk.tools.synthetic import defective_part, good_part

pytest.importorskip("onnx")
from tiny_graphs import brightness_graph, write_tiny_bundle

THRESHOLD = 0.1  # the tiny bundle rejects when the brightest 4x4 cell (at 256x256) > 200


def reference_score(image: np.ndarray) -> float:
    """The tiny bundle's score by hand: 0.1 * (brightest 4x4 cell at 256x256 - 100) / 100."""
    small = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float64)
    cells = small.reshape(64, 4, 64, 4).mean(axis=(1, 3))
    return 0.1 * (cells.max() - 100.0) / 100.0


def blob(
    image: np.ndarray,
    value: int,
    radius: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape
    mask = np.zeros((h, w), np.uint8)
    centre = (
        int(rng.integers(radius + 2, w - radius - 2)),
        int(rng.integers(radius + 2, h - radius - 2)),
    )
    cv2.circle(mask, centre, radius, 255, -1)
    out = image.copy()
    out[mask > 0] = value
    return out, mask


def make_data(root: Path) -> dict[str, list[tuple[str, np.ndarray, np.ndarray | None]]]:
    """Good parts of several sizes (one with glare: a false reject), bright defects (caught),
    dark scratches (escapes: a brightness model cannot see them), generated defects, and one
    defect with an empty mask (as magnetic_tile's 'uneven')."""
    rng = np.random.default_rng(42)
    sizes = itertools.cycle([(256, 256), (200, 300), (320, 240)])
    parts: dict[str, list[tuple[str, np.ndarray, np.ndarray | None]]] = {
        "good": [],
        "bright": [],
        "dark": [],
        "generated": [],
        "faint": [],
    }
    for k in range(6):
        h, w = next(sizes)
        parts["good"].append((f"good_{k}", good_part(rng, height=h, width=w), None))
    glare, _ = blob(good_part(rng), 255, 30, rng)
    parts["good"].append(("glare", glare, None))
    for k in range(3):
        h, w = next(sizes)
        image, mask = blob(good_part(rng, height=h, width=w), 250, 18 + 6 * k, rng)
        parts["bright"].append((f"bright_{k}", image, mask))
        scratch = good_part(rng, height=h, width=w)
        mask = np.zeros((h, w), np.uint8)
        cv2.line(mask, (20, 30 + 10 * k), (w - 30, h - 40), 255, 5)
        scratch[mask > 0] = 20
        parts["dark"].append((f"dark_{k}", scratch, mask))
    for k in range(3):
        image, mask = defective_part(rng, height=240, width=240)
        parts["generated"].append((f"gen_{k}", image, mask))
    parts["faint"].append(("faint_0", good_part(rng), np.zeros((256, 256), np.uint8)))
    for kind, items in parts.items():
        folder = root / "test" / kind
        folder.mkdir(parents=True)
        for stem, image, mask in items:
            cv2.imwrite(str(folder / f"{stem}.png"), image)
            if mask is not None:
                truth = root / "ground_truth" / kind
                truth.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(truth / f"{stem}_mask.png"), mask)
    return parts


@pytest.fixture()
def tiny_bundle(tmp_path: Path) -> Path:
    return write_tiny_bundle(tmp_path / "tiny.bundle", brightness_graph(), threshold=THRESHOLD)


def test_eval_on_generated_data(tmp_path: Path, tiny_bundle: Path) -> None:
    data = tmp_path / "parts"
    parts = make_data(data)
    out = tmp_path / "eval"
    rep = evaluate_bundle(tiny_bundle, data, out_dir=out, device="cpu", worst=3)

    expected = {
        stem: reference_score(image) for items in parts.values() for stem, image, _ in items
    }
    # No score sits on the threshold, so the verdicts below are exact.
    assert all(abs(s - THRESHOLD) > 1e-3 for s in expected.values())
    by_stem = {Path(r["path"]).stem: r for r in rep["images"]}
    for stem, score in expected.items():
        assert by_stem[stem]["score"] == pytest.approx(score, abs=1e-5), stem
        assert by_stem[stem]["verdict"] == ("NOK" if score > THRESHOLD else "OK"), stem

    good = [expected[s] for s, _, _ in parts["good"]]
    bad = [
        expected[s] for kind in ("bright", "dark", "generated", "faint") for s, _, _ in parts[kind]
    ]
    assert rep["data"]["good_images"] == 7 and rep["data"]["defective_images"] == 10
    assert rep["data"]["defect_types"] == {"bright": 3, "dark": 3, "faint": 1, "generated": 3}
    # Image AUROC against every pair by hand (the model's own scores, ties included).
    good_model = [by_stem[s]["score"] for s, _, _ in parts["good"]]
    bad_model = [
        by_stem[s]["score"]
        for k in ("bright", "dark", "generated", "faint")
        for s, _, _ in parts[k]
    ]
    pairs = [
        1.0 if b > g else 0.5 if b == g else 0.0
        for b, g in itertools.product(bad_model, good_model)
    ]
    assert rep["image"]["auroc"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    lo, hi = rep["image"]["auroc_95ci"]
    assert lo < rep["image"]["auroc"] <= hi <= 1.0  # 17 parts: a wide interval
    # Bright defects (250) beat every good part but the glare (255): 6 of 7 pairs each.
    assert rep["image"]["per_defect_type"]["bright"]["auroc"] == pytest.approx(6 / 7)
    assert rep["image"]["per_defect_type"]["bright"]["images"] == 3

    at = rep["at_threshold"]
    assert at["false_rejects"]["count"] == sum(s > THRESHOLD for s in good) == 1  # the glare
    escapes = sum(s <= THRESHOLD for s in bad)
    assert at["escapes"]["count"] == escapes >= 4  # three dark scratches and the faint one
    assert at["escapes"]["rate_95ci"][0] < escapes / 10 < at["escapes"]["rate_95ci"][1]

    # Pixel metrics cover every pixel of every image, each at its own size.
    pixel = rep["pixel"]
    all_items = [item for items in parts.values() for item in items]
    assert pixel["good_pixels"] + pixel["defect_pixels"] == sum(i.size for _, i, _ in all_items)
    assert pixel["defect_pixels"] == sum(
        int((m > 0).sum()) for _, _, m in all_items if m is not None
    )
    regions = sum(
        cv2.connectedComponents((m > 0).astype(np.uint8), connectivity=8)[0] - 1
        for _, _, m in all_items
        if m is not None
    )
    assert pixel["defect_regions"] == regions
    assert 0.0 < pixel["auroc"] < 1.0 and 0.0 < pixel["au_pro"] < 1.0
    assert any("empty mask" in note for note in rep["notes"])

    # Files: the JSON report and pictures a person can open.
    saved = json.loads((out / "report.json").read_text())
    assert saved["image"]["auroc"] == rep["image"]["auroc"]
    for name in ("histogram.png", "roc.png"):
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.shape[0] >= 600 and picture.std() > 10
    escape_files = rep["pictures"]["lowest_scored_defects"]
    assert len(escape_files) == 3 and all("_escape_" in f for f in escape_files)
    assert rep["pictures"]["highest_scored_good"][0].startswith(
        "highest_scored_good/01_false_reject_good_glare"
    )
    assert "_passed_" in rep["pictures"]["highest_scored_good"][1]
    overlay = cv2.imread(str(out / escape_files[0]))
    assert overlay is not None and overlay.shape[:2] in {(256, 256), (200, 300), (320, 240)}

    summary = format_summary(rep)
    assert "image AUROC" in summary and "AU-PRO" in summary and "escapes" in summary


def test_eval_without_masks(tmp_path: Path, tiny_bundle: Path) -> None:
    data = tmp_path / "parts"
    make_data(data)
    shutil.rmtree(data / "ground_truth" / "dark")
    partial = evaluate_bundle(tiny_bundle, data, device="cpu")
    assert partial["pixel"] is not None
    assert any("3 of 10 defective images have no ground-truth mask" in n for n in partial["notes"])
    shutil.rmtree(data / "ground_truth")
    none = evaluate_bundle(tiny_bundle, data, device="cpu")
    assert none["pixel"] is None
    assert any("pixel metrics skipped" in n for n in none["notes"])
    assert none["image"]["auroc"] == partial["image"]["auroc"]


def test_eval_refuses_a_folder_without_the_layout(tmp_path: Path, tiny_bundle: Path) -> None:
    from edge_sdk import EdgeADError

    (tmp_path / "flat").mkdir()
    with pytest.raises(EdgeADError, match="MVTec AD layout"):
        evaluate_bundle(tiny_bundle, tmp_path / "flat", device="cpu")


def test_eval_command(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "parts"
    make_data(data)
    parser = argparse.ArgumentParser(prog="edge-ad")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["eval", str(data / "test"), "--bundle", str(tiny_bundle), "--device", "cpu", "--json"]
    )
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["at_threshold"]["false_rejects"]["count"] == 1
    assert printed["data"]["good_images"] == 7
    args = parser.parse_args(
        [
            "eval",
            str(data),
            "--bundle",
            str(tiny_bundle),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert args.func(args) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "false rejects    1/7" in text and "report and pictures in" in text
    # Not a terminal (a log, a pipe): progress comes as lines, not silence.
    assert "eval 17/17 images" in captured.err


def test_eval_on_real_magnetic_tile(tmp_path: Path, s_bundle: Path) -> None:
    """A handful of real images through a real (random-weight) EfficientAD-S graph: the
    pipeline works on odd image sizes, JPEG input and an empty 'uneven' mask."""
    source = data_set("magnetic_tile")
    picks = {
        "good": ["exp0_num_743", "exp1_num_10903"],
        "blowhole": ["exp1_num_108719"],
        "uneven": ["exp3_num_45042"],  # its mask is empty in the source data
    }
    root = tmp_path / "mt"
    for kind, stems in picks.items():
        (root / "test" / kind).mkdir(parents=True)
        for stem in stems:
            shutil.copy(source / "test" / kind / f"{stem}.jpg", root / "test" / kind)
            if kind != "good":
                (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                shutil.copy(
                    source / "ground_truth" / kind / f"{stem}_mask.png",
                    root / "ground_truth" / kind,
                )
    rep = evaluate_bundle(s_bundle, root, out_dir=tmp_path / "out", device="cpu", worst=1)
    assert rep["data"]["good_images"] == 2 and rep["data"]["defective_images"] == 2
    assert 0.0 <= rep["image"]["auroc"] <= 1.0
    sizes = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).shape for p in root.rglob("*.jpg")]
    pixel = rep["pixel"]
    assert pixel["good_pixels"] + pixel["defect_pixels"] == sum(h * w for h, w in sizes)
    assert pixel["defect_regions"] >= 1 and pixel["au_pro"] is not None
    assert any("1 defective images have an empty mask" in n for n in rep["notes"])
    assert (tmp_path / "out" / "report.json").is_file()


def test_target_check_against_the_calibration_interval() -> None:
    from types import SimpleNamespace

    from edge_sdk.runtime.manifest import ThresholdPolicy
    from edge_sdk.statistics import rate

    policy = ThresholdPolicy(
        target_false_reject_rate=0.01,
        expected_false_reject_rate_95ci=(0.002, 0.05),
        images=51,
        good_scores={"median": 0.05},
    )
    good = [SimpleNamespace(score=0.05)] * 100
    inside = report.target_check(policy, rate(2, 100), good)  # type: ignore[arg-type]
    assert inside is not None and inside["within"] and "note" not in inside
    shifted = [SimpleNamespace(score=0.08)] * 100
    outside = report.target_check(policy, rate(30, 100), shifted)  # type: ignore[arg-type]
    assert outside is not None and not outside["within"]
    assert "score higher than the calibration images" in outside["note"]
    assert "edge-ad calibrate" in outside["note"]
    # Bundles calibrated before the interval was recorded: nothing to compare.
    legacy = ThresholdPolicy(method="false_reject_rate")
    assert report.target_check(legacy, rate(1, 10), good) is None  # type: ignore[arg-type]
