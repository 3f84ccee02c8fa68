"""Tiled bundles (issue 16): the layout in the manifest, its validation, stitching, and a
tiled bundle through the Inspector on a real ONNX graph: one verdict per part."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_sdk.records import Verdict
from edge_sdk.runtime.bundle import Bundle
from edge_sdk.runtime.inspector import Inspector
from edge_sdk.runtime.tiling import (
    MAP_CELL,
    Region,
    TileGrid,
    Tiling,
    blend_weights,
    plan_regions,
    stitch,
    tile_origins,
)

pytest.importorskip("onnx")
from tiny_graphs import brightness_graph, write_tiny_bundle

TILING = {"grid": {"size": 256, "overlap": 32, "scale": 1.0}}


def test_tiles_cover_the_region_and_overlap_at_least_as_asked() -> None:
    for length in (256, 260, 480, 600, 1248, 2048):
        origins = tile_origins(length, 256, 32)
        assert origins[0] == 0 and origins[-1] + 256 == length
        assert all(o % MAP_CELL == 0 for o in origins)
        assert all(b - a <= 256 - 32 for a, b in itertools.pairwise(origins))
    with pytest.raises(ValueError, match="shorter than one tile"):
        tile_origins(200, 256, 32)


def test_layouts_are_validated_with_clear_errors() -> None:
    with pytest.raises(ValidationError, match="outside the 500x400 frame"):
        Tiling(frame=(400, 500), regions=(Region(x=300, width=300),))
    with pytest.raises(ValidationError, match="smaller than one 256 px tile"):
        Tiling(frame=(400, 500), regions=(Region(width=200),))
    with pytest.raises(ValidationError, match="greater than 0"):
        TileGrid(overlap=0)
    with pytest.raises(ValidationError, match="multiple of 4"):
        TileGrid(overlap=30)
    with pytest.raises(ValidationError, match="under half the tile"):
        TileGrid(overlap=128)
    with pytest.raises(ValidationError, match="names must be unique"):
        Tiling(regions=(Region(name="a"), Region(name="a")))
    with pytest.raises(ValidationError, match="must equal the model input"):
        from edge_sdk.runtime.manifest import InputSpec

        InputSpec(tiling=Tiling(grid=TileGrid(size=128)))
    from edge_sdk.runtime.tiling import TilingError

    with pytest.raises(TilingError, match="smaller than the 500x400"):
        plan_regions(Tiling(frame=(400, 500)), (300, 500))


def test_stitching_returns_a_map_that_agrees_across_tiles_exactly() -> None:
    grid = TileGrid(size=256, overlap=32)
    [plan] = plan_regions(Tiling(grid=grid), (600, 520))
    cells = 256 // MAP_CELL
    rng = np.random.default_rng(0)
    truth = rng.random((plan.scaled[0] // MAP_CELL, plan.scaled[1] // MAP_CELL), np.float32)
    crops = [
        truth[y // MAP_CELL : y // MAP_CELL + cells, x // MAP_CELL : x // MAP_CELL + cells]
        for y, x in plan.tiles
    ]
    np.testing.assert_allclose(stitch(crops, plan, grid), truth, rtol=1e-6)
    # Tiles that disagree are blended: in the overlap the map lies between them, no seam.
    flat = [np.full((cells, cells), float(k), np.float32) for k in range(len(plan.tiles))]
    out = stitch(flat, plan, grid)
    assert out[0, 0] == 0 and out.min() >= 0 and out.max() <= len(plan.tiles) - 1
    row = out[0, : plan.tiles[1][1] // MAP_CELL + cells]
    assert np.all(np.diff(row) >= 0)  # rises smoothly from tile 0 to tile 1
    w = blend_weights(cells, 8)
    assert w.min() > 0 and w[cells // 2, cells // 2] == 1


def test_manifest_round_trip(tmp_path: Path) -> None:
    tiling = {
        "frame": [600, 500],
        "regions": [{"name": "commutator", "x": 10, "y": 20, "width": 480, "height": 560}],
        "grid": {"size": 256, "overlap": 32},
    }
    bundle = write_tiny_bundle(tmp_path / "t.bundle", brightness_graph(), tiling=tiling)
    read = Bundle.open(bundle).manifest.model.input.tiling
    assert read == Tiling.model_validate(tiling)
    assert read is not None and read.regions[0].name == "commutator"
    # Bundles without tiling keep reading as they were.
    plain = write_tiny_bundle(tmp_path / "p.bundle", brightness_graph())
    assert Bundle.open(plain).manifest.model.input.tiling is None


def _frame(defect_at: tuple[int, int] | None) -> np.ndarray:
    frame = np.full((600, 500), 100, np.uint8)
    if defect_at is not None:
        y, x = defect_at
        frame[y : y + 8, x : x + 8] = 255
    return frame


def test_a_tiled_bundle_gives_one_verdict_per_part_and_names_the_worst_tile(
    tmp_path: Path,
) -> None:
    tiled = write_tiny_bundle(tmp_path / "t.bundle", brightness_graph(), tiling=TILING)
    plain = write_tiny_bundle(tmp_path / "p.bundle", brightness_graph())
    frames = [_frame(None), _frame((400, 300)), _frame(None)[:200]]
    with Inspector.open(tiled, device="cpu", max_batch=4) as inspector:
        good, bad, small = inspector.inspect_batch(frames, frame_ids=[1, 2, 3])
        assert [r.frame_id for r in (good, bad, small)] == [1, 2, 3]
        assert good.verdict is Verdict.OK and good.worst_tile is not None
        assert bad.verdict is Verdict.NOK and "worst_tile" in bad.to_dict()
        assert bad.worst_tile is not None and bad.worst_tile.startswith("part: tile")
        # A frame its region does not fit fails safe, with the reason.
        assert small.verdict is Verdict.ERROR and "smaller than one 256 px tile" in str(small.error)
        full = inspector.full_map(bad)
        assert full.shape == (600, 500)
        y, x = np.unravel_index(int(np.argmax(full)), full.shape)
        assert 390 <= y <= 416 and 290 <= x <= 316  # the defect, in frame pixels
        assert inspector.defect_mask(bad)[404, 304] and not inspector.defect_mask(bad)[50, 50]
    # Squeezed into one 256 px input, the 8 px defect loses most of its contrast.
    with Inspector.open(plain, device="cpu") as inspector:
        squeezed = inspector.inspect(_frame((400, 300)))
    assert squeezed.score < bad.score
    assert "worst_tile" not in squeezed.to_dict()


def test_a_frame_too_small_for_a_tile_is_enlarged_when_the_grid_says_so(tmp_path: Path) -> None:
    """Parts whose size varies (magnetic tiles: 103 to 632 px wide): a frame under one tile
    at the grid's scale is scaled up until its shorter side is one tile, everywhere alike."""
    from edge_sdk.runtime.tiling import TilingError

    with pytest.raises(TilingError, match=r"set tiling\.grid\.enlarge_small"):
        plan_regions(Tiling(), (300, 103))
    grid = {"size": 256, "overlap": 32, "scale": 1.0, "enlarge_small": True}
    [plan] = plan_regions(Tiling(grid=TileGrid(**grid)), (300, 103))
    assert plan.scaled == (744, 256) and [x for _, x in plan.tiles] == [0] * 4
    assert plan.scale == pytest.approx((744 / 300, 256 / 103))
    [large] = plan_regions(Tiling(grid=TileGrid(**grid)), (600, 500))  # large enough: as is
    assert large.scaled == (600, 500)
    tiled = write_tiny_bundle(tmp_path / "t.bundle", brightness_graph(), tiling={"grid": grid})
    frame = np.full((300, 103), 100, np.uint8)
    frame[200:204, 50:54] = 255  # 4x4 frame px: 10x10 model px once enlarged
    with Inspector.open(tiled, device="cpu") as inspector:
        result = inspector.inspect(frame)
        assert result.verdict is Verdict.NOK and result.worst_tile is not None
        found = re.search(r"at x (\d+), y (\d+) \(frame px\)", result.worst_tile)
        assert found and int(found[1]) < 103 and int(found[2]) < 300  # in the frame's pixels
        full = inspector.full_map(result)
        assert full.shape == (300, 103)
        yy, xx = np.unravel_index(int(np.argmax(full)), full.shape)
        assert 196 <= yy <= 208 and 46 <= xx <= 58


def test_recalibrating_a_tiled_bundle_scores_parts_as_the_inspector_does(tmp_path: Path) -> None:
    from edge_sdk.calibration.recalibrate import recalibrate

    tiled = write_tiny_bundle(tmp_path / "t.bundle", brightness_graph(), tiling=TILING)
    rng = np.random.default_rng(0)
    good = [np.clip(rng.normal(120, 3, (600, 500)), 0, 255).astype(np.uint8) for _ in range(6)]
    bad = [_frame((400, 300))]
    out = recalibrate(tiled, good, out=tmp_path / "r.bundle", bad_images=bad, policy="margin")
    manifest = Bundle.open(out).manifest
    assert manifest.model.input.tiling == Bundle.open(tiled).manifest.model.input.tiling
    # The quantiles pooled every tile's map; the threshold sits between the part scores
    # the Inspector gives the good frames and the defective one.
    assert manifest.calibration["map_size"] == [64, 64]
    with Inspector.open(out, device="cpu") as inspector:
        good_scores = [inspector.inspect(g).score for g in good]
        bad_score = inspector.inspect(bad[0]).score
    assert max(good_scores) < manifest.threshold.image < bad_score


def test_the_readme_layout_file_is_a_valid_tiling(tmp_path: Path) -> None:
    from edge_sdk.training.commands import parse_tiling

    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text().split("**Native resolution (tiles).**", 1)[1]
    layout = tmp_path / "layout.yaml"
    layout.write_text(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    tiling = parse_tiling(str(layout))
    assert tiling.regions[0].name == "commutator" and tiling.frame == (1250, 500)
    [plan] = plan_regions(tiling, (1250, 500))
    assert plan.scaled == (1248, 420) and len(plan.tiles) == 12


def test_a_layout_is_suggested_from_the_images_and_the_smallest_defect() -> None:
    from edge_sdk.training.layout_choice import suggest_tiling

    # KolektorSDD-sized images: a 6 px crack is 1.2 px squeezed into 256 px.
    choice = suggest_tiling([(1250, 500), (1240, 510)], min_defect_px=6)
    assert choice.tiling is not None and choice.tiling.grid.scale >= 8 / 6
    assert "1.2 model px" in choice.message and f"{choice.tiles_per_image} tiles" in choice.message
    # Large defects on small images: no tiling.
    assert suggest_tiling([(300, 200)], min_defect_px=20).tiling is None
    # A small image side sets the least scale at which a tile fits.
    assert suggest_tiling([(600, 180)], min_defect_px=30).tiling is None
    choice = suggest_tiling([(600, 180), (600, 600)], min_defect_px=5)
    assert choice.tiling is not None and choice.tiling.grid.scale == pytest.approx(1.6)
    with pytest.raises(ValueError, match="more than 8"):
        suggest_tiling([(100, 100)], min_defect_px=0.5)


def test_train_says_what_squeezing_loses_on_large_or_long_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    from edge_sdk.training.commands import _print_squeeze_note
    from edge_sdk.training.layout_choice import squeeze_note

    # Long commutators: both the scale and the aspect ratio are named.
    note = squeeze_note([(1250, 500), (1240, 510)])
    assert note is not None and "aspect 2.5:1 lost" in note and "under about 39 px" in note
    # A large square frame: only the scale (2048 / 256 = 8 image px a model px).
    note = squeeze_note([(2048, 2048)])
    assert note is not None and "aspect" not in note and "under about 64 px" in note
    # A long strip that is small: the aspect ratio alone.
    note = squeeze_note([(100, 300)])
    assert note is not None and "aspect 3:1 lost" in note
    assert squeeze_note([(300, 280)]) is None and squeeze_note([]) is None
    # The command reads the folder's images; an unreadable folder is left to training.
    folder = tmp_path / "good"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((1200, 480), 90 + i, np.uint8))
    _print_squeeze_note(folder)
    assert "a 480x1200 image is squeezed to 256x256 px" in capsys.readouterr().err
    _print_squeeze_note(tmp_path / "missing")
    assert capsys.readouterr().err == ""


def test_the_line_checks_its_deadline_against_a_whole_tiled_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_sdk.errors import ConfigError
    from edge_sdk.line.service import check_deadline

    declared = write_tiny_bundle(
        tmp_path / "d.bundle", brightness_graph(), tiling={**TILING, "frame": [600, 500]}
    )
    with Inspector.open(declared, device="cpu") as inspector:
        with pytest.raises(ConfigError, match="a 500x600 part in tiles"):
            check_deadline(inspector, 1e-3)
        check_deadline(inspector, 60_000)
    undeclared = write_tiny_bundle(tmp_path / "u.bundle", brightness_graph(), tiling=TILING)
    with Inspector.open(undeclared, device="cpu") as inspector:
        check_deadline(inspector, 1e-3)  # nothing to time it on before the first frame
    assert "not checked before the first frame" in caplog.text
