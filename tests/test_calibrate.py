"""Calibration with policies and a split, and recalibration into a child bundle.

The tiny brightness graph makes every number exact: a uniform image of brightness b has
a constant raw map b, so quantiles and scores are known in closed form.
"""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk import Bundle, BundleError, EdgeADError, Inspector, Verdict
from edge_sdk.calibration import quantiles as calibration
from edge_sdk.calibration import thresholds
from edge_sdk.runtime.engine import Engine, EngineOptions

pytest.importorskip("onnx")
from tiny_graphs import brightness_graph, write_tiny_bundle

from edge_sdk.calibration.recalibrate import recalibrate
from edge_sdk.evaluation.commands import add_calibrate_parser


def flat(brightness: int, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    return np.full(size, brightness, np.uint8)


def with_patch(background: int, patch: int) -> np.ndarray:
    image = flat(background)
    image[40:80, 60:100] = patch
    return image


@pytest.fixture()
def parent(tmp_path: Path) -> Path:
    return write_tiny_bundle(tmp_path / "line.bundle", brightness_graph(), threshold=0.1)


@pytest.fixture()
def engine(parent: Path) -> Engine:
    return Engine.from_bundle(Bundle.open(parent), EngineOptions(device="cpu"), warmup=False)


def test_calibrate_default_where_the_images_resolve_the_target_is_the_measured_rate(
    engine: Engine,
) -> None:
    images = [flat(100 + i) for i in range(10)]
    _, threshold, record = calibration.calibrate(engine, images, target_frr=0.1)
    maps = calibration.collect_raw_maps(engine, images)
    scores = calibration.image_scores(maps, calibration.normalization_from(maps))
    value, legacy = thresholds.threshold_for_false_reject_rate(scores, target_frr=0.1)
    assert threshold.image == threshold.pixel == value
    # 10 images resolve 10 %: the robust policy is the measured rate (frr) there.
    assert threshold.policy.method == "robust_false_reject_rate"
    assert threshold.policy.split["same_images"] is True
    for key, expected in legacy.items():
        assert key == "method" or threshold.policy.model_dump()[key] == expected
    assert record["images"] == 10 and "defective_images" not in record


def test_calibrate_split_sets_quantiles_and_threshold_on_different_images(
    engine: Engine,
) -> None:
    brightness = list(range(100, 130))  # 30 images
    images = [flat(b) for b in brightness]
    norm, threshold, _ = calibration.calibrate(engine, images, target_frr=0.05, split=True)
    quantile_b = np.array(brightness[0::3], np.float64)  # every third image
    values = np.repeat(quantile_b, 64 * 64)  # the brightness map is 64x64 per image
    qa, qb = np.quantile(values, [0.9, 0.995])
    assert norm.st.qa == pytest.approx(qa) and norm.st.qb == pytest.approx(qb)
    # Threshold images: the other 20. One of 20 may exceed at 5 %: the second highest,
    # 128 (129 is the highest; both are threshold images). Weights st 0.5 (defaults).
    expected = 0.5 * 0.1 * (128 - qa) / (qb - qa)
    assert threshold.image == pytest.approx(expected, rel=1e-5)
    split = threshold.policy.split
    assert split == {
        "quantile_images": 10,
        "threshold_images": 20,
        "same_images": False,
        "rule": split["rule"],
    }


def test_calibrate_split_with_few_images_says_so(engine: Engine) -> None:
    _, threshold, _ = calibration.calibrate(engine, [flat(100 + i) for i in range(8)], split=True)
    assert threshold.policy.split["same_images"] is True
    assert any("same images" in note for note in threshold.policy.notes)


def test_calibrate_with_defective_images_defaults_to_strict(engine: Engine) -> None:
    good = [flat(100 + i) for i in range(20)]
    bad = [with_patch(110, 250), with_patch(110, 116)]  # the second barely brighter
    norm, threshold, record = calibration.calibrate(engine, good, bad_images=bad, target_frr=0.1)
    policy = threshold.policy
    assert policy.policy == "strict" and policy.chosen_by == "default"
    assert policy.at_threshold["escapes"]["count"] == 0
    assert record["defective_images"] == 2
    # The faint defect (116) passes the frr threshold (good 100..119, two may exceed: the
    # good image at 117). Catching it needs the zero-escape threshold: the good image at
    # 115, since the good image at 116 scores exactly as the defect does.
    assert policy.candidates["frr"]["escapes"] == 1
    assert threshold.image == policy.candidates["zero-escape"]["threshold"]
    scores = calibration.image_scores(
        calibration.collect_raw_maps(engine, [flat(115), flat(117)]), norm
    )
    assert policy.candidates["frr"]["threshold"] == pytest.approx(scores[1], abs=0)
    assert threshold.image == pytest.approx(scores[0], abs=0)


def test_recalibrate_writes_a_child_bundle(parent: Path, tmp_path: Path) -> None:
    good = [flat(205 + i) for i in range(30)]  # new, brighter lighting
    bad = [with_patch(215, 255) for _ in range(3)]
    out = recalibrate(
        parent,
        good,
        bad_images=bad,
        out=tmp_path / "child.bundle",
        target_frr=0.05,
        good_source="new-light/",
    )
    child = Bundle.open(out)
    m = child.manifest
    today = datetime.now(timezone.utc).strftime("%Y%m%d")
    assert m.name == f"line-recal-{today}"
    with zipfile.ZipFile(parent) as zp, zipfile.ZipFile(out) as zc:
        parent_yaml = zp.read("bundle.yaml")
        assert zc.read("model.onnx") == zp.read("model.onnx")  # byte-identical graph
        assert sorted(zc.namelist()) == sorted(zp.namelist())
    assert m.parent == f"line@sha256:{hashlib.sha256(parent_yaml).hexdigest()}"
    assert child.graph() == Bundle.open(parent).graph()
    assert m.model.sha256 == Bundle.open(parent).manifest.model.sha256
    # The parent's weights (st only) are kept; the quantiles follow the new light.
    assert (m.normalization.weights.st, m.normalization.weights.ae) == (1.0, 0.0)
    assert m.normalization.st.qa > 205
    assert m.threshold.policy.policy == "strict"
    assert m.threshold.policy.split["same_images"] is False
    assert m.calibration["source"] == "new-light/" and m.calibration["defective_images"] == 3
    check = m.calibration["map_weights_check"]
    assert (check["good_images"], check["defective_images"]) == (20, 3)
    by_share = {row["st"]: row for row in check["rows"]}
    assert sorted(by_share) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert by_share[0.0]["image_auroc"] == 0.5  # the autoencoder map alone: all alike
    assert all(by_share[s]["image_auroc"] == 1.0 for s in (0.25, 0.5, 0.75, 1.0))
    assert m.calibration["recalibrated_from"]["threshold"]["image"] == 0.1
    # The old bundle rejects every part under the new light; the child does not.
    with Inspector.open(parent, device="cpu") as old, Inspector.open(out, device="cpu") as new:
        assert old.inspect(flat(210)).verdict is Verdict.NOK
        assert new.inspect(flat(210)).verdict is Verdict.OK
        assert new.inspect(with_patch(215, 255)).verdict is Verdict.NOK


def test_recalibrate_refuses_to_overwrite(parent: Path, tmp_path: Path) -> None:
    out = tmp_path / "child.bundle"
    images = [flat(150 + i) for i in range(5)]
    recalibrate(parent, images, out=out, name="child")
    before = out.read_bytes()
    with pytest.raises(BundleError, match="already exists"):
        recalibrate(parent, images, out=out)
    with pytest.raises(BundleError, match="already exists"):
        recalibrate(parent, images, out=parent)
    assert out.read_bytes() == before
    child = Bundle.open(out).manifest
    assert child.name == "child"
    assert any("same images" in n for n in child.threshold.policy.notes)


def test_recalibrate_with_new_map_weights_sets_the_threshold_on_their_scores(
    parent: Path, tmp_path: Path
) -> None:
    from edge_sdk.runtime.manifest import MapWeights

    good = [flat(150 + 2 * i) for i in range(30)]
    kept = Bundle.open(recalibrate(parent, good, out=tmp_path / "kept.bundle")).manifest
    halved = Bundle.open(
        recalibrate(
            parent, good, out=tmp_path / "halved.bundle", weights=MapWeights(st=0.5, ae=0.5)
        )
    ).manifest
    w = halved.normalization.weights
    assert (w.st, w.ae) == (0.5, 0.5)
    # The autoencoder map of this graph is 0: half the student's weight halves every score
    # above the quantile, and the threshold set on them.
    assert halved.normalization.st == kept.normalization.st
    assert halved.threshold.image == pytest.approx(kept.threshold.image / 2, rel=1e-5)
    with Inspector.open(tmp_path / "halved.bundle", device="cpu") as inspector:
        score = inspector.inspect(flat(200)).score
    with Inspector.open(tmp_path / "kept.bundle", device="cpu") as inspector:
        assert score == pytest.approx(inspector.inspect(flat(200)).score / 2, rel=1e-5)


def _write_images(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for k, image in enumerate(images):
        cv2.imwrite(str(folder / f"{k:03d}.png"), image)
    return folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-ad")
    add_calibrate_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_calibrate_command(
    parent: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = _write_images(tmp_path / "good", [flat(140 + i) for i in range(24)])
    bad = _write_images(tmp_path / "bad", [with_patch(150, 250)])
    out = tmp_path / "new.bundle"
    args = _parser().parse_args(
        [
            "calibrate",
            "--bundle",
            str(parent),
            "--good",
            str(good),
            "--bad",
            str(bad),
            "--out",
            str(out),
            "--policy",
            "zero-escape",
            "--name",
            "line-b",
            "--map-weights",
            "0.75,0.25",
        ]
    )
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "line@sha256:" in text and "zero-escape" in text
    assert "map weights st 1, ae 0 -> st 0.75, ae 0.25" in text
    # With defects, each weighting's separation of them: this graph's autoencoder map is 0,
    # so without the student map every image scores alike (AUROC one half).
    assert "image AUROC of these 1 defects against 16 good images" in text
    assert "  0,1  0.500" in text and "  1,0  1.000" in text
    assert "  0.75,0.25  1.000" in text and text.count("(this bundle's)") == 1
    assert "  0.75,0.25  1.000  (this bundle's)" in text  # one defect: no interval
    assert "quantiles from 8 good images, threshold from 16" in text
    child = Bundle.open(out).manifest
    assert child.name == "line-b" and child.threshold.policy.policy == "zero-escape"
    # Again to the same file: refused (the CLI turns EdgeADError into exit code 4).
    with pytest.raises(EdgeADError, match="already exists"):
        args.func(args)


def test_calibrate_command_usage_errors(
    parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write_images(tmp_path / "good", [flat(140)])
    parser = _parser()
    base = [
        "calibrate",
        "--bundle",
        str(parent),
        "--good",
        str(good),
        "--out",
        str(tmp_path / "x.bundle"),
    ]
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([*base, "--target-frr", "2"])
    assert exc.value.code == 2
    for weights in ("1", "0,0", "-1,2", "a,b", "nan,1"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([*base, "--map-weights", weights])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "expected two numbers ST,AE" in err and "not both 0, got '0,0'" in err
    args = parser.parse_args([*base, "--policy", "f1"])
    assert args.func(args) == 2
    assert "needs defective images" in capsys.readouterr().err
    assert not (tmp_path / "x.bundle").exists()


def test_calibrate_through_edge_ad_main(parent: Path, tmp_path: Path) -> None:
    from edge_sdk import cli

    if "calibrate" not in cli.build_parser().format_help():
        pytest.skip("edge-ad calibrate is not wired into edge_sdk.cli yet")
    good = _write_images(tmp_path / "good", [flat(140 + i) for i in range(5)])
    argv = [
        "calibrate",
        "--bundle",
        str(parent),
        "--good",
        str(good),
        "--out",
        str(tmp_path / "c.bundle"),
    ]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 4  # refuses to overwrite
    assert cli.main([*argv[:-1], str(tmp_path / "d.bundle"), "--policy", "f1"]) == 2


class _CountingSession:
    """The engine's real ONNX Runtime session, with its graph executions counted."""

    def __init__(self, session: object) -> None:
        self._session = session
        self.executions = 0

    def run(self, *args: object, **kwargs: object) -> object:
        self.executions += 1
        return self._session.run(*args, **kwargs)  # type: ignore[attr-defined]

    def run_with_iobinding(self, *args: object, **kwargs: object) -> object:
        self.executions += 1
        return self._session.run_with_iobinding(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)


def test_each_image_runs_through_the_graph_once(engine: Engine) -> None:
    # The first run at a new batch size used to be run twice (once to learn the map
    # size): calibrating 20 images in batches of 8, 8 and 4 cost 28 images of compute.
    counting = _CountingSession(engine.session)
    engine.session = counting  # type: ignore[assignment]
    images = [flat(100 + i) for i in range(20)]
    maps = calibration.collect_raw_maps(engine, images, batch=8)
    assert counting.executions == 3  # batches of 8, 8 and 4
    again = calibration.collect_raw_maps(engine, images, batch=8)
    assert counting.executions == 6
    np.testing.assert_array_equal(maps.st, again.st)  # bound buffers give the same maps
