"""scripts/full_recipe.py end to end on a tiny budget: teacher, bundle, evaluation and
figures in one folder, and a rerun that skips what is done."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import good_images

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("efficientnet_lite_pytorch", reason="the teacher extra is not installed")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "full_recipe.py"


def _parts(root: Path) -> Path:
    from edge_sdk.tools.synthetic import defective_part

    rng = np.random.default_rng(0)
    for folder, images in (
        (root / "train" / "good", good_images(8, seed=1)),
        (root / "test" / "good", good_images(3, seed=2)),
    ):
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(folder / f"{i}.png"), image)
    (root / "test" / "defect").mkdir()
    (root / "ground_truth" / "defect").mkdir(parents=True)
    for i in range(3):
        image, mask = defective_part(rng)
        cv2.imwrite(str(root / "test" / "defect" / f"{i}.png"), image)
        cv2.imwrite(str(root / "ground_truth" / "defect" / f"{i}_mask.png"), mask)
    return root


def test_full_recipe_on_a_tiny_budget(tmp_path: Path) -> None:
    data = _parts(tmp_path / "parts")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(good_images(3, seed=4, size=(300, 360))):
        cv2.imwrite(str(photos / f"{i}.png"), image)
    out = tmp_path / "run"
    argv = [sys.executable, str(SCRIPT), "--photos", str(photos), "--data", str(data)]
    argv += ["--out", str(out), "--teacher-steps", "2", "--teacher-batch", "2"]
    argv += ["--projection-photos", "4"]
    argv += ["--steps", "2", "--device", "cpu"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA GPU" in done.stderr
    figures = json.loads((out / "figures.json").read_text())
    assert figures["teacher"]["steps"] == 2 and figures["teacher"]["batch_size"] == 2
    entry = figures["sets"]["parts"]
    assert 0.0 <= entry["image_auroc"] <= 1.0 and entry["at_threshold"]["escapes"]["of"] == 3
    assert (out / "teacher.pth").is_file() and (out / "parts.bundle").exists()
    assert (out / "parts.eval" / "report.json").is_file()
    from edge_sdk.runtime.bundle import Bundle

    record = Bundle.open(out / "parts.bundle").manifest.training
    assert record["teacher"]["sha256"] == figures["teacher"]["sha256"]
    # A rerun skips the finished teacher and bundle and evaluates again.
    written = {p: p.stat().st_mtime_ns for p in (out / "teacher.pth", out / "parts.bundle")}
    again = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert "parts: image AUROC" in again.stdout


def test_budget_curve_on_a_tiny_budget(tmp_path: Path) -> None:
    # benchmarks/budget_curve.py: one run per set and teacher, a bundle and a row per
    # milestone, each evaluated on the test split.
    data = _parts(tmp_path / "parts")
    script = SCRIPT.parents[1] / "benchmarks" / "budget_curve.py"
    results = tmp_path / "curve.json"
    argv = [sys.executable, str(script), "--data", str(data), "--teacher", "random"]
    argv += ["--milestones", "2,1", "--device", "cpu", "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [*argv, "--results", str(results)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(results.read_text())["rows"]
    assert [(r["teacher"], r["steps"]) for r in rows] == [("random", 1), ("random", 2)]
    assert all(r["escapes"]["of"] == 3 and r["false_rejects"]["of"] == 3 for r in rows)
    from edge_sdk.runtime.bundle import Bundle

    record = Bundle.open(tmp_path / "run" / "parts_random_2.bundle").manifest.training
    assert record["steps"] == 2 and record["recipe"]["steps"] == 2
    assert "parts       random      1 steps: image AUROC" in done.stdout
    # A second start must not silently begin the checkpointed runs again...
    again = subprocess.run(
        [*argv, "--results", str(results)], capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 2 and "pass --resume" in again.stderr
    assert "parts_random" in again.stderr  # names the run it would have started over
    # ...and --resume gives the rows still missing from where the run stopped, not anew.
    doc = json.loads(results.read_text())
    doc["rows"] = doc["rows"][:1]  # stopped while the 2-step model was being evaluated
    results.write_text(json.dumps(doc))
    again = subprocess.run(
        [*argv, "--results", str(results), "--resume"], capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr[-2000:]
    doc = json.loads(results.read_text())
    assert [r["steps"] for r in doc["rows"]] == [1, 2] and len(doc["resumed"]) == 1
    assert doc["rows"][1]["image_auroc"] == rows[1]["image_auroc"]
    assert "1 steps" not in again.stdout  # measured before: not trained nor evaluated again


def test_budget_curve_starts_sharing_a_results_file_keep_each_others_rows(
    tmp_path: Path,
) -> None:
    # One start per set, one per core, all writing one file: no row may be lost.
    script = SCRIPT.parents[1] / "benchmarks" / "budget_curve.py"
    results = tmp_path / "curve.json"
    writer = (
        "import pathlib, runpy, sys, time\n"
        f"write_row = runpy.run_path({str(script)!r})['write_row']\n"
        f"results, go = pathlib.Path({str(results)!r}), pathlib.Path({str(tmp_path)!r})\n"
        "(go / sys.argv[1]).touch()\n"
        "while not all((go / n).exists() for n in 'ab'):\n"
        "    time.sleep(0.001)  # both start writing together\n"
        "for steps in range(100):\n"
        "    row = {'data': sys.argv[1], 'teacher': 'default', 'steps': steps}\n"
        "    write_row(results, row, resumed=sys.argv[1])\n"
    )
    starts = [subprocess.Popen([sys.executable, "-c", writer, name]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in starts] == [0, 0]
    doc = json.loads(results.read_text())
    assert [(r["data"], r["steps"]) for r in doc["rows"]] == [
        (name, steps) for name in ("a", "b") for steps in range(100)
    ]
    assert doc["resumed"] == ["a", "b"]


def test_feature_knn_baseline_on_a_tiny_set(tmp_path: Path) -> None:
    # benchmarks/feature_knn.py: the training-free baseline, its threshold from the held-out
    # images, its rates on the test split.
    data = _parts(tmp_path / "parts")
    script = SCRIPT.parents[1] / "benchmarks" / "feature_knn.py"
    results = tmp_path / "knn.json"

    def knn(*options: str) -> dict:
        argv = [sys.executable, str(script), "--data", str(data), "--fit-images", "4", *options]
        done = subprocess.run(
            [*argv, "--results", str(results)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "parts: image AUROC" in done.stdout
        return dict(json.loads(results.read_text()))

    (row,) = knn("--bank", "500")["rows"]
    assert row["fit_images"] == 4 and row["bank"] == [500, 40 + 112]
    assert row["false_rejects"]["of"] == 3 and row["escapes"]["of"] == 3
    assert 0.0 <= row["image_auroc"] <= 1.0 and row["threshold_images"] >= 1
    assert len(row["scores"]["held_out"]) == row["threshold_images"]
    assert len(row["scores"]["test_good"]) == 3 and len(row["scores"]["test_defective"]) == 3
    # The threshold policies' table on those scores: the same rule as the row's own threshold.
    robust = next(r for r in row["policies"] if (r["images"], r["policy"]) == ("all", "robust"))
    assert robust["frr_median"] == row["false_rejects"]["rate"]
    policies = {"frr", "robust", "gumbel", "upper", "tail", "capped"}
    assert {r["policy"] for r in row["policies"]} == policies

    # The teacher-quality proxy: the same scoring on distillation targets, standardised.
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(good_images(2, seed=5, size=(300, 360))):
        cv2.imwrite(str(photos / f"photo-{i}.png"), image)
    doc = knn(
        *("--bank", "300", "--features", "targets", "--projection", "pca-rotated"),
        *("--photos", str(photos), "--projection-photos", "3", "--standardise"),
    )
    assert doc["features"]["projection"]["kind"] == "pca-rotated"
    assert doc["features"]["projection"]["layout"] == "points"
    assert doc["features"]["standardised"] and doc["rows"][0]["bank"] == [300, 384]
    mean = knn(
        *("--bank", "300", "--features", "targets", "--projection", "pca-rotated"),
        *("--photos", str(photos), "--projection-photos", "3", "--target-layout", "mean"),
    )
    assert mean["features"]["projection"]["layout"] == "mean"
    assert mean["features"]["projection"]["input_dims"] == 24 + 40 + 112
    assert knn("--features", "teacher:random")["features"]["teacher"] == "random"


def test_map_parts_reads_the_trained_weights_as_the_bundle_does(tmp_path: Path) -> None:
    # benchmarks/map_parts.py rebuilds each score from the two raw maps; at the trained
    # weights its robust threshold on the bundle's threshold images is the bundle's own
    # (training scored them through torch, this through the ONNX graph: 1e-4 apart at most).
    from edge_sdk.runtime.bundle import Bundle

    data = _parts(tmp_path / "parts")
    bundle = tmp_path / "parts.bundle"
    train = [sys.executable, "-m", "edge_sdk", "train", str(data), "--out", str(bundle)]
    options = ["--teacher", "random", "--steps", "2", "--device", "cpu"]
    done = subprocess.run([*train, *options], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = tmp_path / "parts.json"
    script = SCRIPT.parents[1] / "benchmarks" / "map_parts.py"
    argv = [sys.executable, str(script), str(data), "--bundle", str(bundle), "--out", str(results)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(results.read_text())
    rows = {r["st_share"]: r for r in doc["rows"]}
    assert sorted(rows) == [0.0, 0.25, 0.5, 0.75, 1.0] and doc["trained_st_share"] == 0.5
    trained = rows[0.5]
    assert trained["threshold"] == pytest.approx(
        Bundle.open(bundle).manifest.threshold.image, rel=1e-4
    )
    assert trained["vs_trained"]["difference"] == 0.0
    assert trained["false_rejects"]["of"] == 3 and trained["escapes"]["of"] == 3
    # The shares are different readings of the maps, not one repeated.
    assert len({r["threshold"] for r in rows.values()}) == len(rows)
    # The benchmarks that share its image groups (benchmarks/bundle_images.py) find the
    # same threshold images and test images.
    for name, extra in (("threshold_policies", []), ("map_smoothing", ["--sigmas", "0,1"])):
        out = tmp_path / f"{name}.json"
        script = SCRIPT.parents[1] / "benchmarks" / f"{name}.py"
        argv = [sys.executable, str(script), str(data), "--bundle", str(bundle), *extra]
        done = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        other = json.loads(out.read_text())
        if name == "threshold_policies":
            assert other["held_out_threshold_images"] == doc["threshold_images"]
            assert len(other["scores"]["test_good"]) == 3
        else:
            assert other["rows"] and other["threshold_images"] == doc["threshold_images"]


def test_targets_teacher_gives_the_targets_through_the_inference_graph(tmp_path: Path) -> None:
    # benchmarks/targets_teacher.py: the distillation targets as the teacher. Folded into the
    # inference graph (raw 0..255 input, the teacher's mean/std), it must still give the
    # targets of the image inside its reflected border, standardised.
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(SCRIPT.parents[1] / "benchmarks"))
    from targets_teacher import targets_teacher

    from edge_sdk.training import networks as nets
    from edge_sdk.training.inference_graph import InferenceGraph
    from edge_sdk.training.teacher_targets import CONTEXT, targets

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(good_images(3, seed=5, size=(300, 360))):
        cv2.imwrite(str(photos / f"photo-{i}.png"), image)
    teacher = targets_teacher(photos, "pca-rotated", "mean").eval()
    mean, std = torch.randn(384) * 0.1, torch.rand(384) + 0.5
    graph = InferenceGraph(teacher, nets.student("efficientad-s"), nets.autoencoder(), mean, std)
    image = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)
    core = teacher[1]
    window = F.pad(image.float() / 255.0, (CONTEXT,) * 4, mode="reflect")
    want = (targets(core.backbone, core.projection, window) - mean.view(1, -1, 1, 1)) / std.view(
        1, -1, 1, 1
    )
    with torch.no_grad():
        got = graph.teacher(image.float())
    assert got.shape == (1, 384, 56, 56)
    assert torch.allclose(got, want, atol=2e-3 * float(want.abs().max()))


def test_targets_teacher_cost_times_both_graphs(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(good_images(2, seed=6, size=(300, 360))):
        cv2.imwrite(str(photos / f"photo-{i}.png"), image)
    script = SCRIPT.parents[1] / "benchmarks" / "targets_teacher_cost.py"
    out = tmp_path / "cost.json"
    argv = [sys.executable, str(script), "--photos", str(photos), "--rounds", "1"]
    done = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc["median_ms"]) == {"pdn", "targets"} and doc["targets_over_pdn"] > 0
