"""Real EfficientAD-S training runs at 256x256 on generated parts: checkpoints and resume,
and a short run through ``edge-ad train`` whose bundle the runtime loads and runs.

bfloat16 where the CPU runs it natively (as a user would train here), float32 otherwise.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the training extra is not installed")

import cv2
import numpy as np
import torch
from conftest import good_images

from edge_sdk.errors import ConfigError
from edge_sdk.training import networks as nets
from edge_sdk.training import train as train_module
from edge_sdk.training.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from edge_sdk.training.commands import ProgressPrinter, add_train_parser
from edge_sdk.training.recipe import INPUT_RESIZE
from edge_sdk.training.train import (
    FitResult,
    Progress,
    TrainConfig,
    TrainingInterrupted,
    cpu_has_fast_bf16,
    fit,
    resolve_teacher,
)
from edge_sdk.training.trainer import FINGERPRINT_BEFORE, Trainer

BF16 = cpu_has_fast_bf16()


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight generated good parts, one of them not square, one in colour."""
    folder = tmp_path_factory.mktemp("parts")
    images = good_images(7, seed=1)
    images.append(good_images(1, seed=2, size=(200, 320))[0])
    images[3] = cv2.cvtColor(images[3], cv2.COLOR_GRAY2BGR)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"part-{i}.png"), image)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-ins for generic photos: smooth colour noise, 288x384."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(3):
        noise = rng.uniform(0, 255, size=(36, 48, 3)).astype(np.uint8)
        cv2.imwrite(str(folder / f"photo-{i}.jpg"), cv2.resize(noise, (384, 288)))
    return folder


def _config(parts: Path, tmp: Path, **changes: object) -> TrainConfig:
    options: dict[str, object] = {
        "data": parts,
        "out": tmp / "model.bundle",
        "teacher": "random",
        "steps": 3,
        "bf16": BF16,
        "device": "cpu",
        "checkpoint_dir": tmp / "ckpt",
    }
    options.update(changes)
    return TrainConfig(**options)  # type: ignore[arg-type]


def _stop_after(step: int) -> object:
    def callback(p: Progress) -> None:
        if p.phase == "training" and p.step == step:
            raise KeyboardInterrupt

    return callback


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(
    parts: Path, photos: Path, tmp_path: Path
) -> None:
    torch.manual_seed(7)
    teacher_file = tmp_path / "teacher.pth"
    torch.save(nets.teacher("efficientad-s").state_dict(), teacher_file)
    common = {"teacher": teacher_file, "penalty": photos}
    full = fit(_config(parts, tmp_path, checkpoint_dir=tmp_path / "a", **common))

    interrupted = _config(parts, tmp_path, checkpoint_dir=tmp_path / "b", **common)
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(interrupted, progress=_stop_after(1))  # type: ignore[arg-type]
    assert stopped.value.step == 1
    assert stopped.value.checkpoint == checkpoint_path(tmp_path / "b")
    with pytest.raises(ConfigError, match="--resume"):
        fit(interrupted)
    with pytest.raises(ConfigError, match=r"different training run.*seed"):
        fit(_config(parts, tmp_path, checkpoint_dir=tmp_path / "b", seed=1, resume=True, **common))

    resumed = fit(_config(parts, tmp_path, checkpoint_dir=tmp_path / "b", resume=True, **common))
    assert resumed.steps == full.steps == 3
    for name in ("student", "autoencoder"):
        a, b = getattr(full, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key}"
    torch.testing.assert_close(full.teacher_mean, resumed.teacher_mean, rtol=0, atol=0)
    assert full.losses == resumed.losses and "penalty" in full.losses
    saved_a = torch.load(checkpoint_path(tmp_path / "a"), weights_only=True)
    saved_b = torch.load(checkpoint_path(tmp_path / "b"), weights_only=True)
    assert saved_a["scheduler"] == saved_b["scheduler"]
    for key, state in saved_a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], saved_b["optimizer"]["state"][key]["exp_avg_sq"])
    assert full.teacher_source.sha256 is not None
    # Resuming a finished run trains nothing more (the CLI then goes straight to export).
    again = fit(_config(parts, tmp_path, checkpoint_dir=tmp_path / "b", resume=True, **common))
    assert again.steps == 3 and again.losses == full.losses


def test_short_run_through_the_cli_gives_a_bundle_the_runtime_runs(
    parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_sdk import Inspector
    from edge_sdk.records import Verdict
    from edge_sdk.runtime.bundle import Bundle
    from edge_sdk.tools.synthetic import defective_part

    parser = argparse.ArgumentParser(prog="edge-ad")
    add_train_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "parts.bundle"
    argv = ["train", str(parts), "--out", str(out), "--teacher", "random", "--steps", "4"]
    options = ["--seed", "3", "--device", "cpu", "--int8", "--lr", "3e-4", "--map-weights", "1,0"]
    options += ["--bf16"] * BF16
    args = parser.parse_args(argv + options)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed

    manifest = Bundle.open(out).manifest
    # The int8 variant is added behind the gate, or refused with the float32 bundle kept.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    if "int8 variant: added" in printed:
        assert manifest.model.variants["int8"].parity["images"] == 4
    else:
        assert "int8 variant: refused by the parity gate" in printed
        assert "int8" not in manifest.model.variants
    record = manifest.training
    assert record["steps"] == 4 and record["seed"] == 3
    assert record["recipe"]["optimizer"]["lr"] == 3e-4
    assert record["teacher"]["source"] == "random"
    assert record["images"] == {"train": 4, "validation": 4}
    assert set(record["losses"]) == {"total", "hard", "ae", "stae"}
    assert manifest.calibration["images"] == 4
    weights = manifest.normalization.weights
    assert (weights.st, weights.ae) == (1.0, 0.0)
    assert manifest.model.input.resize == INPUT_RESIZE == "area_fast"
    rng = np.random.default_rng(5)
    with Inspector.open(out, device="cpu") as inspector:
        tall = good_images(1, seed=9, size=(300, 180))[0]
        results = inspector.inspect_batch([tall, defective_part(rng)[0]])
    assert all(r.verdict in (Verdict.OK, Verdict.NOK) for r in results)
    assert results[0].anomaly_map is not None

    # Bundles are immutable: a second run to the same file is refused before training.
    assert args.func(args) == 4
    assert "already exists" in capsys.readouterr().err


def test_cli_usage_and_data_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="edge-ad")
    add_train_parser(parser.add_subparsers(dest="command"))
    base = ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "x.bundle")]
    for extra in (
        ["--steps", "0"],
        ["--val-fraction", "1.5"],
        ["--target-frr", "0"],
        ["--lr", "0"],
    ):
        args = parser.parse_args(base + extra)
        assert args.func(args) == 2
    args = parser.parse_args([*base, "--teacher", "random"])
    assert args.func(args) == 4
    assert f"{tmp_path / 'missing'}: no such folder" in capsys.readouterr().err
    args = parser.parse_args([*base, "--teacher", str(tmp_path / "t.pth")])
    assert args.func(args) == 4
    assert "t.pth: no such file" in capsys.readouterr().err


def test_default_teacher_is_resolved_from_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path in train_module.DEFAULT_TEACHER.values():
        assert path.is_absolute() and path.parent.name == "models"
    monkeypatch.setitem(train_module.DEFAULT_TEACHER, "efficientad-s", tmp_path / "none.pth")
    with pytest.raises(ConfigError, match="pass --teacher FILE"):
        resolve_teacher(None, "efficientad-s")
    weights = tmp_path / "t.pth"
    torch.save(nets.teacher("efficientad-s").state_dict(), weights)
    monkeypatch.setitem(train_module.DEFAULT_TEACHER, "efficientad-s", weights)
    assert resolve_teacher(None, "efficientad-s").path == weights
    assert resolve_teacher("random", "efficientad-s").path is None


def test_progress_printer_lines_and_terminal() -> None:
    losses = {"total": 1.5, "hard": 1.0, "ae": 0.4, "stae": 0.1}
    events = [
        Progress("statistics", 0, 8),
        Progress("statistics", 8, 8),
        Progress("training", 1, 100, losses, 2.0, 49.5, 0.5),
        Progress("training", 2, 100, losses, 2.0, 49.0, 1.0),
        Progress("training", 100, 100, losses, 2.0, 0.0, 50.0),
    ]
    plain = io.StringIO()
    printer = ProgressPrinter(plain, tty=False)
    for event in events:
        printer(event)
    lines = plain.getvalue().splitlines()
    # Phase changes and the end of a phase; step 2 falls inside the 30 s interval.
    assert len(lines) == 4
    assert lines[2].startswith("train 1/100") and "hard 1.0000" in lines[2]
    assert "left 0m49s" in lines[2]
    term = io.StringIO()
    printer = ProgressPrinter(term, tty=True)
    for event in events:
        printer(event)
    printer.close()
    assert term.getvalue().count("\n") == 2 and "\r" in term.getvalue()


def test_checkpoints_from_before_resize_modes_continue_only_as_area(tmp_path: Path) -> None:
    # Checkpoints written before the fingerprint had "resize" were trained with "area".
    path = save_checkpoint(tmp_path / "old.pt", {"fingerprint": {"seed": 0}, "step": 5})
    old = {"seed": 0, "resize": "area"}
    assert load_checkpoint(path, fingerprint=old, older=FINGERPRINT_BEFORE)["step"] == 5
    with pytest.raises(ConfigError, match="resize: checkpoint 'area', now 'area_fast'"):
        load_checkpoint(path, fingerprint={**old, "resize": "area_fast"}, older=FINGERPRINT_BEFORE)


def test_map_weights_both_zero_are_a_config_error(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path, map_weights=(0.0, 0.0))
    with pytest.raises(ConfigError, match="map weights: expected two weights >= 0"):
        config.validate()


def test_unknown_resize_mode_is_a_config_error(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path, resize="cubic")
    with pytest.raises(ConfigError, match="resize: expected one of area, linear, area_fast"):
        config.validate()


@pytest.mark.parametrize("cache_bytes", [None, 0])
def test_step_equals_the_reference_step(
    parts: Path, photos: Path, tmp_path: Path, cache_bytes: int | None
) -> None:
    """The cheaper step computes the reference step's losses and gradients, whether the
    teacher's outputs come from the cache or are computed at the step (budget 0); its fused
    Adam makes the reference's plain Adam update."""
    from edge_sdk.training.reference_step import reference_train_step
    from edge_sdk.training.trainer import TeacherCache, Trainer

    config = _config(parts, tmp_path, penalty=photos, bf16=False, batch_size=2)
    ours = Trainer(config, torch.device("cpu"))
    reference = Trainer(config, torch.device("cpu"), fused_adam=False)
    if cache_bytes is not None:
        ours.teacher_cache = TeacherCache(cache_bytes)
    ours.measure_teacher(None)
    assert len(ours.teacher_cache.outputs) == (0 if cache_bytes == 0 else 4)
    mean, std = ours.teacher_mean.view(1, -1, 1, 1), ours.teacher_std.view(1, -1, 1, 1)
    for _ in range(2):  # the second step follows an optimiser update
        got = ours.train_step(mean, std)
        want = reference_train_step(reference, mean, std)
        assert got.keys() == want.keys() and "penalty" in got
        for key in got:
            assert got[key] == pytest.approx(want[key], rel=1e-5), key
        for (name, p), q in zip(
            ours.student.named_parameters(), reference.student.parameters(), strict=True
        ):
            assert p.grad is not None and q.grad is not None
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)
        for run in (ours, reference):
            run.update()
            run.step += 1


def test_student_halves_are_the_slices_of_the_full_output() -> None:
    from edge_sdk.training.trainer import student_halves

    torch.manual_seed(0)
    for arch in ("efficientad-s", "efficientad-m"):
        student = nets.student(arch).eval()
        x = torch.randn(3, 3, 96, 96)
        with torch.no_grad():
            full = student(x)
            first, second = student_halves(student, x, teacher_half=2)
        torch.testing.assert_close(first, full[:2, :384], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(second, full[2:, 384:], rtol=1e-5, atol=1e-5)


def test_teacher_cache_keeps_to_its_budget() -> None:
    from edge_sdk.training.trainer import TeacherCache

    cache = TeacherCache(budget=2 * 4 * 100)
    for i in range(3):
        cache.put(i, torch.full((100,), float(i)))
    assert cache.get(0) is not None and cache.get(1) is not None and cache.get(2) is None
    assert cache.used == 800
    cache.put(0, torch.zeros(100))  # a second put of a cached image changes nothing
    assert cache.used == 800


def test_training_lets_idle_threads_sleep_unless_told_otherwise() -> None:
    probe = "import os, edge_sdk.training.networks; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        run_env = env if given is None else {**env, "OMP_WAIT_POLICY": given}
        done = subprocess.run(
            [sys.executable, "-c", probe], env=run_env, capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == expected


@pytest.mark.parametrize(
    "script", ["benchmarks/budget_curve.py", "benchmarks/train_step.py", "scripts/full_recipe.py"]
)
def test_training_scripts_let_idle_threads_sleep(script: str) -> None:
    # Each loads torch itself; the policy only takes if edge_sdk.training comes first.
    path = Path(__file__).resolve().parents[1] / script
    probe = (
        "import os, runpy, sys\n"
        f"sys.argv = [{str(path)!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(path)!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(os.environ['OMP_WAIT_POLICY'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "PASSIVE"


def test_bf16_is_the_default_where_the_cpu_runs_it_natively() -> None:
    from edge_sdk.training.recipe import precision_for

    cpu = torch.device("cpu")
    auto = precision_for(cpu, None)
    assert auto.autocast_dtype == (torch.bfloat16 if BF16 else None)
    assert precision_for(cpu, False).autocast_dtype is None
    assert precision_for(cpu, True).autocast_dtype == torch.bfloat16
    parser = argparse.ArgumentParser(prog="edge-ad")
    add_train_parser(parser.add_subparsers(dest="command"))
    for flag, value in (([], None), (["--bf16"], True), (["--no-bf16"], False)):
        assert parser.parse_args(["train", "d", "--out", "o", *flag]).bf16 is value


def test_time_budget_sets_the_steps_from_measured_steps(
    parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_sdk.runtime.bundle import Bundle
    from edge_sdk.training.commands import parse_duration
    from edge_sdk.training.train import plan_for_budget

    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    for bad in ("soon", "m", "0s", "-5m"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)
    config = _config(parts, tmp_path)
    plan = plan_for_budget(config, 30.0)
    assert plan.step_s > 0 and plan.steps == max(1, int((30.0 - plan.statistics_s) / plan.step_s))
    with pytest.raises(ConfigError, match="positive"):
        plan_for_budget(config, 0)

    parser = argparse.ArgumentParser(prog="edge-ad")
    add_train_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "budget.bundle"
    argv = ["train", str(parts), "--out", str(out), "--teacher", "random", "--device", "cpu"]
    args = parser.parse_args([*argv, "--time-budget", "4s"])
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert "steps fit 0m04s here" in err and "--steps" in err
    record = Bundle.open(out).manifest.training
    assert record["time_budget"]["budget_s"] == 4.0
    assert record["steps"] == record["time_budget"]["steps"] >= 1
    # The calibration's reliability is said at train time (4 held-out images: too few).
    assert "WARNING: too few held-out good images" in err and "cannot resolve" in err
    args = parser.parse_args([*argv, "--time-budget", "4s", "--resume"])
    assert args.func(args) == 2


def test_milestones_give_the_models_of_separate_runs_and_resume(
    parts: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from edge_sdk.training.milestones import fit_milestones

    def same(a: FitResult, b: FitResult, what: str) -> None:
        for name in ("student", "autoencoder"):
            sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
            for key in sa:
                assert torch.equal(sa[key], sb[key]), f"{what}: {name}.{key}"
        assert a.losses == b.losses, what

    config = _config(parts, tmp_path)
    models = list(fit_milestones(config, [3, 1]))
    assert [m.steps for m in models] == [1, 3]
    for model in models:
        same(fit(_config(parts, tmp_path / str(model.steps), steps=model.steps)), model, "alone")
    with pytest.raises(ConfigError, match="milestones"):
        next(fit_milestones(config, [0, 3]))

    # benchmarks/budget_curve.py spans sessions: a run stopped anywhere continues from its
    # last checkpoint and gives the models an unstopped run gives, none of them twice.
    ckpt = tmp_path / "curve.ckpt"
    run = fit_milestones(config, [1, 3], checkpoint=ckpt, checkpoint_every=1)
    with caplog.at_level(logging.INFO, "edge_sdk.training.milestones"):
        assert next(run).steps == 1
        assert (
            next(
                fit_milestones(config, [3], checkpoint=tmp_path / "log.ckpt", checkpoint_every=1)
            ).steps
            == 3
        )
    assert "step 1 of 3" in caplog.text  # hours of training say where they stand
    run.close()  # stopped while the 1-step model was being evaluated: it comes again
    run = fit_milestones(config, [1, 3], checkpoint=ckpt, checkpoint_every=1)
    assert next(run).steps == 1
    step = Trainer.train_step

    def killed_at_step_2(self: Trainer, *args: torch.Tensor) -> dict[str, float]:
        if self.step == 2:
            raise KeyboardInterrupt  # the session ends; the checkpoint of step 1 is kept
        return step(self, *args)

    monkeypatch.setattr(Trainer, "train_step", killed_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        next(run)
    monkeypatch.setattr(Trainer, "train_step", step)
    resumed = list(fit_milestones(config, [1, 3], checkpoint=ckpt))
    assert [m.steps for m in resumed] == [3]
    same(resumed[0], models[1], "resumed")
    with pytest.raises(ConfigError, match=r"different training run.*milestones"):
        next(fit_milestones(config, [2, 3], checkpoint=ckpt))


def test_training_on_tiles_gives_a_tiled_bundle(
    parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_sdk import Inspector
    from edge_sdk.runtime.bundle import Bundle

    parser = argparse.ArgumentParser(prog="edge-ad")
    add_train_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "tiled.bundle"
    argv = ["train", str(parts), "--out", str(out), "--teacher", "random", "--steps", "2"]
    # A 4 px defect needs 2 model px per image px; squeezed, these parts give it 1.
    args = parser.parse_args([*argv, "--device", "cpu", "--min-defect-px", "4"])
    assert args.func(args) == 0
    printed = capsys.readouterr()
    assert "a 4 px defect is 4.0 model px in a 256x256 image squeezed" in printed.err
    assert "tiling at scale 2 (9 tiles of 256 px a part)" in printed.err
    assert "tiled: 9 tiles a 256x256 part; one part took" in printed.out
    manifest = Bundle.open(out).manifest
    tiling = manifest.model.input.tiling
    assert tiling is not None and tiling.grid.scale == 2.0
    record = manifest.training
    assert record["tiles"]["train"] > record["images"]["train"]  # several tiles an image
    with Inspector.open(out, device="cpu") as inspector:
        result = inspector.inspect(good_images(1, seed=9, size=(300, 180))[0])
    assert result.worst_tile is not None and result.anomaly_map is not None
    # An image its layout file does not fit is named; a scale out of range is a usage error.
    layout = tmp_path / "half.yaml"
    layout.write_text("grid: {size: 256, overlap: 32, scale: 0.5}\n")
    args = parser.parse_args(
        [*argv[:3], str(tmp_path / "t2.bundle"), *argv[4:], "--tiling", str(layout)]
    )
    assert args.func(args) == 4
    assert f"{parts}/part-" in capsys.readouterr().err
    args = parser.parse_args([*argv, "--tiling", "20"])
    assert args.func(args) == 2
    assert "--tiling 20" in capsys.readouterr().err
    args = parser.parse_args([*argv, "--tiling", "1", "--min-defect-px", "4"])
    assert args.func(args) == 2
    assert "not both" in capsys.readouterr().err
