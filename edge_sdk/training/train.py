"""EfficientAD training from a folder of good images to a calibrated bundle: the reference
recipe (nelson1425/EfficientAD ``efficientad.py``, see :mod:`.trainer` for the step), with
checkpoints, Ctrl-C, progress reports and the export.

Departures from the reference, none of which changes the loss or the gradient: images are
preprocessed by the runtime's own function; the teacher runs once on the image and its
augmented copy together; the 0.999 quantile is taken by top-k instead of a full sort;
every random draw is a function of ``(seed, step)``, which makes resumed runs identical to
uninterrupted ones. The map quantiles and the threshold come from good training images
held out of training, never from test images.
"""

from __future__ import annotations

import collections
import logging
import shutil
import time
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import ConfigError
from edge_sdk.runtime.bundle import Bundle
from edge_sdk.runtime.manifest import MapWeights
from edge_sdk.runtime.tiling import plan_regions
from edge_sdk.training.budget import BudgetPlan, plan_for_budget
from edge_sdk.training.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from edge_sdk.training.data import TrainingData, iter_images
from edge_sdk.training.losses import P_HARD
from edge_sdk.training.recipe import (
    DEFAULT_TEACHER,
    LR_DECAY_AT,
    LR_DECAY_FACTOR,
    WEIGHT_DECAY,
    Progress,
    ProgressCallback,
    TeacherSource,
    TrainConfig,
    TrainingInterrupted,
    cpu_has_fast_bf16,
    resolve_device,
    resolve_teacher,
)
from edge_sdk.training.trainer import FINGERPRINT_BEFORE, Trainer

__all__ = [
    "DEFAULT_TEACHER",
    "BudgetPlan",
    "FitResult",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "cpu_has_fast_bf16",
    "export_fit",
    "fit",
    "plan_for_budget",
    "resolve_teacher",
    "train",
    "training_record",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    """Trained networks (CPU, float32, eval mode) and what the run did."""

    teacher: nn.Sequential
    student: nn.Sequential
    autoencoder: nn.Module
    teacher_mean: torch.Tensor
    teacher_std: torch.Tensor
    data: TrainingData
    teacher_source: TeacherSource
    steps: int
    losses: dict[str, float]
    wall_time_s: float
    device: str
    checkpoint: Path


@dataclass(frozen=True)
class TrainResult:
    """The bundle written and the ``training`` record it carries."""

    bundle: Path
    record: dict[str, Any]


class _Rate:
    """Steps per second over the last few steps (the first steps are slower)."""

    def __init__(self, window: int = 20) -> None:
        self.marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=window)

    def add(self, step: int) -> float:
        self.marks.append((time.perf_counter(), step))
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0


def mean_losses(history: collections.deque[dict[str, float]]) -> dict[str, float]:
    if not history:
        return {}
    return {k: float(np.mean([h[k] for h in history])) for k in history[-1]}


def fit(config: TrainConfig, *, progress: ProgressCallback | None = None) -> FitResult:
    """Train student and autoencoder (no export). Writes a checkpoint every
    ``checkpoint_every`` steps, at the end and on Ctrl-C (then raises
    :class:`TrainingInterrupted`); ``resume`` continues from the checkpoint in
    :meth:`TrainConfig.checkpoint_folder`.
    """
    config.validate()
    device = resolve_device(config.device)
    ckpt = checkpoint_path(config.checkpoint_folder())
    if ckpt.exists() and not config.resume:
        raise ConfigError(
            f"a training checkpoint exists at {ckpt}: pass --resume to continue it, or delete "
            f"it (or choose another --checkpoint-dir) to start over"
        )
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    # The run seeds torch's generators; the caller's generator state is given back after.
    with torch.random.fork_rng(devices=fork_devices, device_type=device.type):
        return _fit(config, device, ckpt, progress)


def _fit(
    config: TrainConfig, device: torch.device, ckpt: Path, progress: ProgressCallback | None
) -> FitResult:
    run = Trainer(config, device)
    started = time.perf_counter()
    if config.resume and ckpt.exists():
        run.restore(load_checkpoint(ckpt, fingerprint=run.fingerprint, older=FINGERPRINT_BEFORE))
        logger.info("resuming %s at step %d of %d", ckpt, run.step, config.steps)
    else:
        try:
            run.measure_teacher(progress)
        except KeyboardInterrupt:
            raise TrainingInterrupted(0, None) from None
    mean = run.teacher_mean.to(device).view(1, -1, 1, 1)
    std = run.teacher_std.to(device).view(1, -1, 1, 1)
    logger.info(
        "training %s for %d steps on %s (%s), %d images, teacher %s",
        config.architecture,
        config.steps,
        device,
        run.precision.label,
        len(run.data.train_images),
        run.teacher_source.path or "random",
    )
    saved_step = run.step if ckpt.exists() else -1
    updating = False
    rate = _Rate()
    elapsed_before = run.elapsed_s
    last_log = started
    try:
        while run.step < config.steps:
            losses = run.train_step(mean, std)
            # An interrupt inside the update leaves the weights half-stepped: the checkpoint
            # then keeps the last consistent state instead.
            updating = True
            run.update()
            run.step += 1
            updating = False
            run.history.append(losses)
            run.elapsed_s = elapsed_before + time.perf_counter() - started
            if run.step % config.checkpoint_every == 0 and run.step < config.steps:
                save_checkpoint(ckpt, run.state())
                saved_step = run.step
            steps_per_s = rate.add(run.step)
            eta = (config.steps - run.step) / steps_per_s if steps_per_s > 0 else None
            if progress is not None:
                progress(
                    Progress(
                        "training",
                        run.step,
                        config.steps,
                        mean_losses(run.history),
                        steps_per_s,
                        eta,
                        run.elapsed_s,
                    )
                )
            if time.perf_counter() - last_log > 60 or run.step == config.steps:
                last_log = time.perf_counter()
                logger.info(
                    "step %d/%d, %.2f steps/s, losses %s",
                    run.step,
                    config.steps,
                    steps_per_s,
                    mean_losses(run.history),
                )
    except KeyboardInterrupt:
        if updating:
            logger.warning(
                "interrupted while updating the weights; kept the checkpoint of step %d", saved_step
            )
            raise TrainingInterrupted(
                max(saved_step, 0), ckpt if saved_step >= 0 else None
            ) from None
        save_checkpoint(ckpt, run.state())
        logger.info("interrupted: checkpoint of step %d written to %s", run.step, ckpt)
        raise TrainingInterrupted(run.step, ckpt) from None
    save_checkpoint(ckpt, run.state())
    return fit_result(run, device, wall_time_s=run.elapsed_s, checkpoint=ckpt)


def fit_result(
    run: Trainer, device: torch.device, *, wall_time_s: float, checkpoint: Path, copy: bool = False
) -> FitResult:
    """The run's networks as a result: on the CPU, float32, eval mode; ``copy``: copies of
    them, so the run can go on training (:mod:`.milestones`)."""
    networks = []
    for module in (run.teacher, run.student, run.autoencoder):
        out = deepcopy(module) if copy else module
        fmt = torch.contiguous_format
        networks.append(out.to("cpu", torch.float32, memory_format=fmt).eval())  # type: ignore[call-overload]
    teacher, student, autoencoder = networks
    return FitResult(
        teacher=teacher,
        student=student,
        autoencoder=autoencoder,
        teacher_mean=run.teacher_mean.cpu(),
        teacher_std=run.teacher_std.cpu(),
        data=run.data,
        teacher_source=run.teacher_source,
        steps=run.step,
        losses=mean_losses(run.history),
        wall_time_s=wall_time_s,
        device=f"{device} ({run.precision.label})",
        checkpoint=checkpoint,
    )


def _map_weights(weights: tuple[float, float] | None) -> MapWeights | None:
    return None if weights is None else MapWeights(st=weights[0], ae=weights[1])


def training_record(config: TrainConfig, result: FitResult) -> dict[str, Any]:
    """The manifest's ``training`` section: enough to tell how the model was made."""
    data = result.data
    return {
        "dataset": config.dataset_label or str(data.source.root),
        "layout": data.source.layout,
        "images": {"train": len(data.split.train), "validation": len(data.split.validation)},
        **({} if config.tiling is None else {"tiles": {"train": len(data.train_images)}}),
        "validation_split": {
            "fraction": data.split.fraction,
            "seed": data.split.seed,
            "files": data.validation_names(),
        },
        "recipe": {
            "architecture": config.architecture,
            "steps": config.steps,
            "batch_size": config.batch_size,
            "optimizer": {"name": "Adam", "lr": config.lr, "weight_decay": WEIGHT_DECAY},
            "lr_schedule": {
                "factor": LR_DECAY_FACTOR,
                "at_step": max(1, int(LR_DECAY_AT * config.steps)),
            },
            "p_hard": P_HARD,
            "penalty": None if config.penalty is None else str(Path(config.penalty).absolute()),
            "ae_augmentation": "one of brightness/contrast/saturation jitter, factor 0.8..1.2",
        },
        "steps": result.steps,
        "seed": config.seed,
        "teacher": {
            **result.teacher_source.record(config.seed),
            "channel_stats": f"measured on the {len(data.split.train)} training images",
        },
        "losses": {k: round(v, 6) for k, v in result.losses.items()},
        "wall_time_s": round(result.wall_time_s, 1),
        "device": result.device,
        "torch": str(torch.__version__),
    }


def train(
    config: TrainConfig,
    *,
    progress: ProgressCallback | None = None,
    budget: BudgetPlan | None = None,
) -> TrainResult:
    """Train EfficientAD on ``config.data`` and write the calibrated bundle ``config.out``.

    The map quantiles and the threshold come from the held-out validation images only.
    ``budget``, when the steps came from :func:`plan_for_budget`, goes into the record.
    """
    out = Path(config.out).expanduser().absolute()
    if out.exists() and not config.overwrite:
        # Checked before training: finding out after hours of training would be cruel.
        raise ConfigError(f"{out}: already exists; bundles are immutable, choose a new name")
    return export_fit(config, fit(config, progress=progress), progress=progress, budget=budget)


def export_fit(
    config: TrainConfig,
    result: FitResult,
    *,
    progress: ProgressCallback | None = None,
    budget: BudgetPlan | None = None,
) -> TrainResult:
    """Write ``result``'s bundle to ``config.out``, calibrated on its held-out images."""
    from edge_sdk.training.export import export_bundle  # onnx is needed only from here

    out = Path(config.out).expanduser().absolute()
    record = training_record(config, result)
    if budget is not None:
        record["time_budget"] = budget.record()
    if progress is not None:
        progress(Progress("export", 0, 1, elapsed_s=result.wall_time_s))
    split = result.data.split
    bundle = export_bundle(
        out,
        architecture=config.architecture,  # type: ignore[arg-type]
        teacher=result.teacher,
        student=result.student,
        autoencoder=result.autoencoder,
        teacher_mean=result.teacher_mean,
        teacher_std=result.teacher_std,
        calibration_images=iter_images(result.data.validation_files),
        name=config.name or out.stem,
        description=config.description,
        calibration_source=(
            f"{len(split.validation)} good training images held out of "
            f"{record['dataset']} (validation split, seed {split.seed})"
        ),
        target_frr=config.target_frr,
        weights=_map_weights(config.map_weights),
        resize=config.resize,
        tiling=config.tiling,
        training=record,
        overwrite=config.overwrite,
    )
    if config.int8:
        record["int8"] = _add_int8(bundle, result.data.train_files)
    if progress is not None:
        progress(Progress("export", 1, 1, elapsed_s=result.wall_time_s))
    logger.info("wrote %s", bundle)
    return TrainResult(bundle=bundle, record=record)


# Good images that calibrate the int8 variant and feed its parity gate; a tiled bundle's
# gate runs every tile of a part through both graphs, so it takes no more images than
# INT8_GATE_TILES tiles hold (and at least MIN_INT8_PARTS).
INT8_IMAGES = 64
INT8_GATE_TILES = 512
MIN_INT8_PARTS = 8


def int8_images(tiles_per_image: int) -> int:
    """How many training images calibrate and gate the int8 variant.

    >>> int8_images(1), int8_images(9), int8_images(30), int8_images(200)
    (64, 56, 17, 8)
    """
    return max(MIN_INT8_PARTS, min(INT8_IMAGES, INT8_GATE_TILES // max(1, tiles_per_image)))


def _add_int8(bundle: Path, train_files: Sequence[Path]) -> str:
    """Give the new bundle its int8 variant, calibrated and gated on training images. Not on
    the held-out ones: the threshold was set among their scores, one of them sits on it by
    construction, and the least rounding flips it. A variant the parity gate refuses
    leaves the float32 bundle as it is; says which."""
    from edge_sdk.runtime.variants import ParityError, add_variant

    tiles = 1
    tiling = Bundle.open(bundle).manifest.model.input.tiling
    if tiling is not None and train_files:
        first = next(iter_images(train_files[:1]))
        tiles = sum(len(p.tiles) for p in plan_regions(tiling, first.shape))
    count = int8_images(tiles)
    step = max(1, len(train_files) // count)
    images = list(iter_images(train_files[::step][:count]))
    staging = bundle.with_name(f".{bundle.name}.fp32")
    bundle.rename(staging)
    try:
        name = Bundle.open(staging).manifest.name
        add_variant(staging, bundle, kind="int8", good=images, name=name)
    except ParityError as exc:
        staging.rename(bundle)
        logger.warning("no int8 variant: %s", exc)
        return f"refused by the parity gate: {exc}"
    except BaseException:
        if not bundle.exists():
            staging.rename(bundle)
        raise
    _remove(staging)
    return "added"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
