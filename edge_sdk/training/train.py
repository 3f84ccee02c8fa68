"""EfficientAD training: the reference recipe (nelson1425/EfficientAD ``efficientad.py``) from
a folder of good images to a calibrated bundle.

Per step: the frozen teacher's output, normalised by its channel statistics on the
training images, is the target; the student's first half learns it through the
hard-feature loss (plus the penalty on a generic photo, when a folder of them is given);
the autoencoder learns it on a jittered copy of the image, and the student's second half
learns the autoencoder's output. Adam (lr 1e-4, weight decay 1e-5) on student and
autoencoder; the learning rate drops x0.1 at 95 % of the steps.

Departures from the reference, none of which changes the loss or the gradient: images are
preprocessed by the runtime's own function; the teacher runs once on the image and its
augmented copy together; the 0.999 quantile is taken by top-k instead of a full sort;
every random draw is a function of ``(seed, step)``, which makes resumed runs identical to
uninterrupted ones.

>>> cfg = TrainConfig(data=Path("parts"), out=Path("parts.bundle"), teacher="random", steps=10)
>>> cfg.checkpoint_folder().name
'parts.bundle.ckpt'
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import ConfigError
from edge_sdk.training import networks as nets
from edge_sdk.training.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from edge_sdk.training.data import (
    PenaltyImages,
    SampleOrder,
    TrainingData,
    augment_for_autoencoder,
    iter_images,
    load_training_data,
    step_rng,
)
from edge_sdk.training.inference_graph import normalise
from edge_sdk.training.losses import P_HARD, efficientad_losses, teacher_channel_stats

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The project's own distilled teachers (issue 3, item 1); a source checkout carries them in
# models/. Resolved from this file, never from the working directory.
DEFAULT_TEACHER: dict[str, Path] = {
    "efficientad-s": REPO_ROOT / "models" / "teacher_small_lite0.pth",
    "efficientad-m": REPO_ROOT / "models" / "teacher_medium_lite0.pth",
}
RANDOM_TEACHER = "random"
LEARNING_RATE = 1e-4
WEIGHT_DECAY = 1e-5
LR_DECAY_AT = 0.95
LR_DECAY_FACTOR = 0.1
LOSS_WINDOW = 100  # steps over which reported losses are averaged
STATS_BATCH = 8

Phase = Literal["statistics", "training", "export"]


@dataclass(frozen=True)
class TrainConfig:
    """What to train. ``teacher`` is a weights file, ``"random"`` (a seeded random teacher:
    weak, for baselines and demos) or None for :data:`DEFAULT_TEACHER`.
    """

    data: Path
    out: Path
    architecture: str = "efficientad-s"
    teacher: str | Path | None = None
    steps: int = 70_000
    penalty: Path | None = None
    seed: int = 0
    batch_size: int = 1
    device: str = "auto"
    bf16: bool = False
    val_fraction: float = 0.1
    target_frr: float = 0.01
    name: str | None = None
    description: str = ""
    dataset_label: str | None = None  # what the manifest names as the dataset; default: data
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 1000
    resume: bool = False
    overwrite: bool = False

    def checkpoint_folder(self) -> Path:
        """Where checkpoints go: ``checkpoint_dir``, or ``OUT.ckpt`` next to the bundle."""
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir).expanduser().absolute()
        out = Path(self.out).expanduser().absolute()
        return out.with_name(out.name + ".ckpt")


@dataclass(frozen=True)
class Progress:
    """A progress report: ``step`` of ``total`` done in ``phase``; losses averaged over the
    last steps; ``eta_s`` None until a rate is known.
    """

    phase: Phase
    step: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    steps_per_s: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0


ProgressCallback = Callable[[Progress], None]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``checkpoint`` holds the state after ``step`` steps (None
    when nothing could be saved). Still a KeyboardInterrupt for whoever catches that.
    """

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"training interrupted after step {step}")
        self.step = step
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class TeacherSource:
    """Where the teacher's weights came from (recorded in the manifest)."""

    path: Path | None  # None: random init from the seed
    sha256: str | None

    def record(self, seed: int) -> dict[str, Any]:
        if self.path is None:
            return {"source": RANDOM_TEACHER, "seed": seed}
        return {"source": str(self.path), "sha256": self.sha256}


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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_teacher(spec: str | Path | None, architecture: str) -> TeacherSource:
    """The teacher to use: a file, ``"random"``, or the default for ``architecture``."""
    if spec is not None and str(spec) == RANDOM_TEACHER:
        return TeacherSource(None, None)
    if spec is None:
        path = DEFAULT_TEACHER.get(architecture)
        if path is None or not path.is_file():
            raise ConfigError(
                f"no default teacher for {architecture} (looked for {path}): pass --teacher "
                f"FILE (e.g. the community's teacher_small.pth / teacher_medium.pth, or one "
                f"from edge-ad pretrain-teacher), or --teacher random (weak: for baselines)"
            )
    else:
        path = Path(spec).expanduser().absolute()
        if not path.is_file():
            raise ConfigError(f"teacher weights {path}: no such file")
    return TeacherSource(path, _sha256_file(path))


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this torch build or machine has no CUDA")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device {device!r}: expected auto, cpu or cuda")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX512-BF16/AMX): then ``bf16`` cuts
    the CPU step time severalfold; without it bf16 is emulated and slower.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class _Precision:
    autocast_dtype: torch.dtype | None
    scaler: bool  # fp16 needs loss scaling; bf16 has float32's exponent range
    label: str


def _precision(device: torch.device, bf16: bool) -> _Precision:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return _Precision(torch.bfloat16, False, "bf16 autocast")
        return _Precision(torch.float16, True, "fp16 autocast, loss scaling")
    if bf16:
        if not cpu_has_fast_bf16():
            logger.warning("bf16 requested, but this CPU has no native bfloat16: it will be slow")
        return _Precision(torch.bfloat16, False, "bf16 autocast")
    return _Precision(None, False, "fp32")


def _fingerprint(
    config: TrainConfig, data: TrainingData, teacher: TeacherSource, penalty: PenaltyImages | None
) -> dict[str, Any]:
    """The options that define the trained model; precision and device may change on resume."""
    return {
        "architecture": config.architecture,
        "data": str(data.source.root),
        "data_files": data.source.fingerprint(),
        "teacher": teacher.sha256 or RANDOM_TEACHER,
        "penalty": None if penalty is None else penalty.fingerprint(),
        "steps": config.steps,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "val_fraction": config.val_fraction,
        "recipe": [LEARNING_RATE, WEIGHT_DECAY, LR_DECAY_AT, LR_DECAY_FACTOR, P_HARD],
    }


def _check_config(config: TrainConfig) -> None:
    if config.architecture not in nets.ARCHITECTURES:
        raise ConfigError(
            f"architecture {config.architecture!r}: expected one of {', '.join(nets.ARCHITECTURES)}"
        )
    for name in ("steps", "batch_size", "checkpoint_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: expected a positive number, found {getattr(config, name)}")
    if not 0.0 < config.target_frr < 1.0:
        raise ConfigError(f"target false-reject rate: expected (0, 1), found {config.target_frr}")


class _Rate:
    """Steps per second over the last few steps (the first steps are slower)."""

    def __init__(self, window: int = 20) -> None:
        self.marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=window)

    def add(self, step: int) -> float:
        self.marks.append((time.perf_counter(), step))
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0


def _mean_losses(history: collections.deque[dict[str, float]]) -> dict[str, float]:
    if not history:
        return {}
    return {k: float(np.mean([h[k] for h in history])) for k in history[-1]}


class _Run:
    """One training run's networks, optimiser and data, between checkpoints."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.teacher_source = resolve_teacher(config.teacher, config.architecture)
        self.penalty = PenaltyImages(config.penalty) if config.penalty is not None else None
        self.data = load_training_data(
            config.data, val_fraction=config.val_fraction, seed=config.seed
        )
        self.fingerprint = _fingerprint(config, self.data, self.teacher_source, self.penalty)
        self.precision = _precision(device, config.bf16)
        self.order = SampleOrder(
            len(self.data.train_images), batch_size=config.batch_size, seed=config.seed
        )
        torch.manual_seed(config.seed)
        self.teacher = nets.teacher(config.architecture)
        if self.teacher_source.path is not None:
            nets.load_teacher_weights(self.teacher, self.teacher_source.path)
        self.student = nets.student(config.architecture)
        self.autoencoder = nets.autoencoder()
        for module in (self.teacher, self.student, self.autoencoder):
            # channels_last: oneDNN's and cuDNN's fast convolution layout (~30 % per CPU step).
            module.to(device, memory_format=torch.channels_last)
        self.teacher.eval().requires_grad_(False)
        self.student.train()
        self.autoencoder.train()
        self.optimizer = torch.optim.Adam(
            itertools.chain(self.student.parameters(), self.autoencoder.parameters()),
            lr=LEARNING_RATE,
            weight_decay=WEIGHT_DECAY,
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=max(1, int(LR_DECAY_AT * config.steps)), gamma=LR_DECAY_FACTOR
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.scaler)
        self.teacher_mean = torch.zeros(nets.TEACHER_CHANNELS)
        self.teacher_std = torch.ones(nets.TEACHER_CHANNELS)
        self.step = 0
        self.elapsed_s = 0.0
        self.history: collections.deque[dict[str, float]] = collections.deque(maxlen=LOSS_WINDOW)

    def autocast(self) -> Any:
        dtype = self.precision.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _input(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = normalise(torch.as_tensor(images)).contiguous(memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=True)

    def measure_teacher(self, progress: ProgressCallback | None) -> None:
        images = self.data.train_images
        n = len(images)

        def batches() -> Iterator[torch.Tensor]:
            for start in range(0, n, STATS_BATCH):
                if progress is not None:
                    progress(Progress("statistics", start, n))
                yield self._input(images[start : start + STATS_BATCH])

        with self.autocast():
            mean, std = teacher_channel_stats(self.teacher, batches())
        self.teacher_mean, self.teacher_std = mean, std
        if progress is not None:
            progress(Progress("statistics", n, n))

    def state(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "teacher": self.teacher.state_dict(),
            "student": self.student.state_dict(),
            "autoencoder": self.autoencoder.state_dict(),
            "teacher_mean": self.teacher_mean,
            "teacher_std": self.teacher_std,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": list(self.history),
            "torch": str(torch.__version__),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.student.load_state_dict(state["student"])
        self.autoencoder.load_state_dict(state["autoencoder"])
        self.teacher_mean = state["teacher_mean"]
        self.teacher_std = state["teacher_std"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.elapsed_s = float(state["elapsed_s"])
        self.history.extend(state["history"])

    def train_step(self, mean: torch.Tensor, std: torch.Tensor) -> dict[str, float]:
        """One optimiser step; leaves ``self.step`` to the caller (see the interrupt logic)."""
        rng = step_rng(self.config.seed, self.step)
        # Dropout in the autoencoder draws from torch's generator: seed it per step as well.
        torch.manual_seed(int(rng.integers(2**62)))
        raw = torch.from_numpy(self.data.train_images[self.order.indices(self.step)])
        image_st = self._input(raw)
        image_ae = self._input(augment_for_autoencoder(raw.float(), rng))
        image_penalty = None
        if self.penalty is not None:
            image_penalty = self._input(self.penalty.draw(rng, self.config.batch_size))
        batch = image_st.shape[0]
        with self.autocast():
            with torch.no_grad():
                teacher_out = (self.teacher(torch.cat([image_st, image_ae])).float() - mean) / std
            student_st = self.student(image_st)
            student_penalty = self.student(image_penalty) if image_penalty is not None else None
            ae_out = self.autoencoder(image_ae)
            student_ae = self.student(image_ae)
        losses = efficientad_losses(
            teacher_st=teacher_out[:batch],
            student_st=student_st,
            teacher_ae=teacher_out[batch:],
            autoencoder_ae=ae_out,
            student_ae=student_ae,
            student_penalty=student_penalty,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses.total).backward()
        return losses.values()

    def update(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()


def fit(config: TrainConfig, *, progress: ProgressCallback | None = None) -> FitResult:
    """Train student and autoencoder (no export). Writes a checkpoint every
    ``checkpoint_every`` steps, at the end and on Ctrl-C (then raises
    :class:`TrainingInterrupted`); ``resume`` continues from the checkpoint in
    :meth:`TrainConfig.checkpoint_folder`.
    """
    _check_config(config)
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
    run = _Run(config, device)
    if config.resume and ckpt.exists():
        run.restore(load_checkpoint(ckpt, fingerprint=run.fingerprint))
        logger.info("resuming %s at step %d of %d", ckpt, run.step, config.steps)
    else:
        run.measure_teacher(progress)
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
    started = time.perf_counter()
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
                        _mean_losses(run.history),
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
                    _mean_losses(run.history),
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
    for module in (run.teacher, run.student, run.autoencoder):
        module.to("cpu", torch.float32, memory_format=torch.contiguous_format).eval()
    return FitResult(
        teacher=run.teacher,
        student=run.student,
        autoencoder=run.autoencoder,
        teacher_mean=run.teacher_mean.cpu(),
        teacher_std=run.teacher_std.cpu(),
        data=run.data,
        teacher_source=run.teacher_source,
        steps=run.step,
        losses=_mean_losses(run.history),
        wall_time_s=run.elapsed_s,
        device=f"{device} ({run.precision.label})",
        checkpoint=ckpt,
    )


def training_record(config: TrainConfig, result: FitResult) -> dict[str, Any]:
    """The manifest's ``training`` section: enough to tell how the model was made."""
    data = result.data
    return {
        "dataset": config.dataset_label or str(data.source.root),
        "layout": data.source.layout,
        "images": {"train": len(data.split.train), "validation": len(data.split.validation)},
        "validation_split": {
            "fraction": data.split.fraction,
            "seed": data.split.seed,
            "files": data.validation_names(),
        },
        "recipe": {
            "architecture": config.architecture,
            "steps": config.steps,
            "batch_size": config.batch_size,
            "optimizer": {"name": "Adam", "lr": LEARNING_RATE, "weight_decay": WEIGHT_DECAY},
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


def train(config: TrainConfig, *, progress: ProgressCallback | None = None) -> TrainResult:
    """Train EfficientAD on ``config.data`` and write the calibrated bundle ``config.out``.

    The map quantiles and the threshold come from the held-out validation images only.
    """
    from edge_sdk.training.export import export_bundle  # onnx is needed only from here

    out = Path(config.out).expanduser().absolute()
    if out.exists() and not config.overwrite:
        # Checked before training: finding out after hours of training would be cruel.
        raise ConfigError(f"{out}: already exists; bundles are immutable, choose a new name")
    result = fit(config, progress=progress)
    record = training_record(config, result)
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
        training=record,
        overwrite=config.overwrite,
    )
    if progress is not None:
        progress(Progress("export", 1, 1, elapsed_s=result.wall_time_s))
    logger.info("wrote %s", bundle)
    return TrainResult(bundle=bundle, record=record)
