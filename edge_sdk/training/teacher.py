"""Distilling a teacher PDN from a pretrained backbone on a folder of generic photos
(``edge-ad pretrain-teacher``), offline.

The recipe (after the reference's ``pretraining.py``, adapted as TEACHER-NOTES suggests):
random crops of the photos (random scale, horizontal flip, grey 30 % of the time, since
lines often run mono cameras); targets from :mod:`.teacher_targets` (backbone features at
the PDN's receptive-field centres, PCA to 384 channels, whitened); MSE between the PDN's
output and the targets; Adam with weight decay 1e-5, a linear warm-up, then cosine decay to
1 % of the learning rate. bfloat16 autocast on CPUs that run it natively, mixed precision on
CUDA; the backbone runs in float32 on the CPU so the targets do not depend on the precision.

Every random draw is a function of ``(seed, step)``, so a resumed run equals an uninterrupted
one. The result is a plain float16 ``state_dict`` in the reference's key layout (loadable by
:func:`edge_sdk.training.networks.load_teacher_weights`) and a sidecar ``FILE.json``.
"""

from __future__ import annotations

import collections
import logging
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from edge_sdk.errors import ConfigError
from edge_sdk.training import networks as nets
from edge_sdk.training.backbones import BACKBONES, Backbone, load_backbone
from edge_sdk.training.checkpoint import (
    checkpoint_folder,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from edge_sdk.training.data import step_rng
from edge_sdk.training.inference_graph import normalise
from edge_sdk.training.recipe import (
    WEIGHT_DECAY,
    TrainingInterrupted,
    adam,
    precision_for,
    resolve_device,
)
from edge_sdk.training.teacher_file import TeacherResult, hardware, write_teacher
from edge_sdk.training.teacher_lineage import (
    Parent,
    check_projection,
    lineage_record,
    read_parent,
)
from edge_sdk.training.teacher_photos import GREY_PROBABILITY, SCALE_RANGE, Photos
from edge_sdk.training.teacher_targets import (
    CONTEXT,
    PROJECTIONS,
    WINDOW,
    Projection,
    ProjectionKind,
    TargetLayout,
    change_of_targets,
    check_layout,
    fit_projections,
    map_teacher_output,
    targets,
    uses_neighbourhood,
)

__all__ = [
    "Photos",
    "TeacherConfig",
    "TeacherProgress",
    "TeacherResult",
    "TrainingInterrupted",
    "distill",
    "distillation_loss",
    "write_teacher",
]

logger = logging.getLogger(__name__)

FINAL_LR_FACTOR = 0.01
LOSS_WINDOW = 20
CURVE_EVERY = 100  # steps between the points of the recorded loss curve
_PROJECTION_STREAM = 0x9C  # keeps the PCA's photos apart from the training draws

Phase = Literal["projection", "distillation"]


@dataclass(frozen=True)
class TeacherConfig:
    """What to distil. ``warmup_steps`` None: 2 % of the steps, at most 1000."""

    photos: Path
    out: Path
    architecture: str = "efficientad-s"
    backbone: str = "lite0"
    weights: Path | None = None
    steps: int = 60_000
    batch_size: int = 16
    lr: float = 5e-4
    seed: int = 0
    device: str = "auto"
    bf16: bool | None = None  # None: where the CPU runs it natively (see precision_for)
    warmup_steps: int | None = None
    projection_images: int = 256
    projection: ProjectionKind = "pca"  # see teacher_targets
    target_layout: TargetLayout = "points"  # see teacher_targets
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 500
    resume: bool = False
    init: Path | None = None  # continue this teacher (see teacher_lineage)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no run can use."""
        if self.architecture not in nets.ARCHITECTURES:
            raise ConfigError(f"architecture {self.architecture!r}: expected efficientad-s or -m")
        if self.projection not in PROJECTIONS:
            raise ConfigError(
                f"projection {self.projection!r}: expected one of {', '.join(PROJECTIONS)}"
            )
        check_layout(self.target_layout)
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone {self.backbone!r}: expected one of {', '.join(BACKBONES)}")
        for name in ("steps", "batch_size", "checkpoint_every", "projection_images"):
            # 0 steps with a parent: only re-express it in another projection.
            least = 0 if name == "steps" and self.init is not None else 1
            if getattr(self, name) < least:
                raise ConfigError(f"{name}: expected at least {least}, found {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate: expected a positive value, found {self.lr}")

    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(1000, self.steps // 50)

    def checkpoint_folder(self) -> Path:
        """``checkpoint_dir``, or ``OUT.ckpt`` next to the output file."""
        return checkpoint_folder(self.checkpoint_dir, self.out)


@dataclass(frozen=True)
class TeacherProgress:
    """``step`` of ``total`` done in ``phase``; ``loss`` averaged over the last steps."""

    phase: Phase
    step: int
    total: int
    loss: float = float("nan")
    steps_per_s: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0


def pdn_crop(window: torch.Tensor) -> torch.Tensor:
    """The PDN's 256x256 input: the centre of the backbone window."""
    return window[:, :, CONTEXT : WINDOW - CONTEXT, CONTEXT : WINDOW - CONTEXT]


def lr_factor(step: int, *, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to FINAL_LR_FACTOR."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return FINAL_LR_FACTOR + (1 - FINAL_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def distillation_loss(
    pdn: torch.nn.Module,
    backbone: Backbone,
    projection: Projection,
    window: torch.Tensor,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """MSE between the PDN's output on the centre of ``window`` (float RGB 0..1, on the
    networks' device) and the projected backbone features of the whole window."""
    device_type = window.device.type
    # On the CPU the backbone stays in float32, so the targets do not depend on the precision; on
    # CUDA it shares the PDN's autocast.
    with torch.autocast(
        device_type, dtype=autocast_dtype, enabled=device_type == "cuda" and bool(autocast_dtype)
    ):
        target = targets(backbone, projection, window).float()
    x = normalise(pdn_crop(window) * 255.0).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        prediction = pdn(x)
    return F.mse_loss(prediction.float(), target)


def projection_windows(photos: Photos, config: TeacherConfig) -> Iterator[torch.Tensor]:
    rng = np.random.default_rng([config.seed, _PROJECTION_STREAM])
    for start in range(0, config.projection_images, 16):
        yield photos.draw(rng, min(16, config.projection_images - start))


def _fingerprint(
    config: TeacherConfig, photos: Photos, backbone: Backbone, parent: Parent | None
) -> dict[str, Any]:
    return {
        "init": None if parent is None else parent.record.get("sha256"),
        "photos": photos.fingerprint(),
        "architecture": config.architecture,
        "backbone": backbone.name,
        "backbone_layers": list(backbone.layers),
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "warmup_steps": config.warmup(),
        "seed": config.seed,
        "projection_images": config.projection_images,
        "projection": config.projection,
        "target_layout": config.target_layout,
    }


# Fingerprint entries added after the first checkpoints, with the value runs had before.
_FINGERPRINT_BEFORE: dict[str, Any] = {"projection": "pca", "target_layout": "points"}


def distill(
    config: TeacherConfig, *, progress: Callable[[TeacherProgress], None] | None = None
) -> TeacherResult:
    """Distil a teacher PDN as ``config`` says and write it (fp16) with its sidecar.

    Checkpoints every ``checkpoint_every`` steps, at the end and on Ctrl-C (then raises
    :class:`TrainingInterrupted`); ``resume`` continues a run with the same options and
    refuses one with different options.
    """
    config.validate()
    photos = Photos(config.photos)
    device = resolve_device(config.device)
    ckpt = checkpoint_path(config.checkpoint_folder())
    if ckpt.exists() and not config.resume:
        raise ConfigError(
            f"a distillation checkpoint exists at {ckpt}: pass --resume to continue it, or "
            f"delete it (or choose another --checkpoint-dir) to start over"
        )
    backbone = load_backbone(config.backbone, weights=config.weights, image_size=WINDOW)
    fork = [device.index or 0] if device.type == "cuda" else []
    # The run seeds torch's generators; the caller's generator state is given back after.
    with torch.random.fork_rng(devices=fork, device_type=device.type):
        torch.manual_seed(config.seed)
        return _distill(config, photos, backbone.to(device), device, ckpt, progress)


def _distill(
    config: TeacherConfig,
    photos: Photos,
    backbone: Backbone,
    device: torch.device,
    ckpt: Path,
    progress: Callable[[TeacherProgress], None] | None,
) -> TeacherResult:
    parent = None
    if config.init is not None:
        parent = read_parent(
            config.init,
            architecture=config.architecture,
            backbone_record=backbone.record(),
            seed=config.seed,
            projection_images=config.projection_images,
            target_layout=config.target_layout,
            photos_count=len(photos.files),
            photos_fingerprint=photos.fingerprint(),
        )
    # A continued run draws on from where its parent's draws ended.
    offset = 0 if parent is None else parent.steps
    # A parent distilled to the other projection is re-expressed in this run's.
    re_expressed_from = (
        parent.projection if parent is not None and parent.projection != config.projection else None
    )
    fingerprint = _fingerprint(config, photos, backbone, parent)
    precision = precision_for(device, config.bf16)
    pdn = nets.teacher(config.architecture)
    if parent is not None:
        nets.load_teacher_weights(pdn, parent.path)
    # channels_last: oneDNN's and cuDNN's fast convolution layout.
    pdn.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = adam(pdn.parameters(), config.lr)
    warmup = config.warmup()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps=config.steps, warmup=warmup)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    history: collections.deque[float] = collections.deque(maxlen=LOSS_WINDOW)
    curve: list[tuple[int, float]] = []
    step, elapsed, first_loss = 0, 0.0, float("nan")
    if config.resume and ckpt.exists():
        state = load_checkpoint(ckpt, fingerprint=fingerprint, older=_FINGERPRINT_BEFORE)
        pdn.load_state_dict(state["pdn"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        projection = Projection.from_state(state["projection"])
        step, elapsed = state["step"], state["elapsed_s"]
        history.extend(state["losses"])
        curve = [(int(a), float(b)) for a, b in state.get("curve", [])]
        first_loss = state["first_loss"]
        logger.info("resuming %s at step %d of %d", ckpt, step, config.steps)
    else:

        def report(n: int) -> None:
            if progress is not None:
                progress(TeacherProgress("projection", n, config.projection_images))

        report(0)
        kinds = [config.projection]
        if re_expressed_from is not None:
            kinds.append(re_expressed_from)  # type: ignore[arg-type]
        fitted = fit_projections(
            backbone,
            projection_windows(photos, config),
            seed=config.seed,
            kinds=kinds,
            layout=config.target_layout,
            progress=report,
        )
        projection = fitted[config.projection]
        if parent is not None:
            check_projection(parent, projection.explained_variance)
            if re_expressed_from is not None:
                change = change_of_targets(fitted[re_expressed_from], projection)  # type: ignore[index]
                map_teacher_output(pdn, *change)
                logger.info(
                    "re-expressed %s's %s outputs in the %s targets",
                    parent.path.name,
                    re_expressed_from,
                    config.projection,
                )

    def save() -> Path:
        return save_checkpoint(
            ckpt,
            {
                "fingerprint": fingerprint,
                "pdn": pdn.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "projection": projection.state(),
                "step": step,
                "elapsed_s": elapsed,
                "losses": list(history),
                "curve": curve,
                "first_loss": first_loss,
            },
        )

    logger.info(
        "distilling %s from %s (%s) for %d steps at batch %d on %s (%s), %d photos",
        config.architecture,
        backbone.name,
        ", ".join(backbone.layers),
        config.steps,
        config.batch_size,
        device,
        precision.label,
        len(photos.files),
    )
    dtype = precision.autocast_dtype
    pdn.train()
    rate_marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=LOSS_WINDOW)
    started = time.perf_counter() - elapsed
    try:
        while step < config.steps:
            rng = step_rng(config.seed, offset + step)
            window = photos.draw(rng, config.batch_size).to(device)
            loss = distillation_loss(pdn, backbone, projection, window, autocast_dtype=dtype)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            value = float(loss.detach())
            if step == 1:
                first_loss = value
            history.append(value)
            if step % CURVE_EVERY == 0 or step == config.steps:
                curve.append((offset + step, round(float(np.mean(history)), 5)))
            elapsed = time.perf_counter() - started
            rate_marks.append((elapsed, step))
            if step % config.checkpoint_every == 0 or step == config.steps:
                save()
            if progress is not None:
                (t0, s0), (t1, s1) = rate_marks[0], rate_marks[-1]
                rate = (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0
                eta = (config.steps - step) / rate if rate > 0 else None
                mean_loss = float(np.mean(history))
                progress(
                    TeacherProgress(
                        "distillation", step, config.steps, mean_loss, rate, eta, elapsed
                    )
                )
    except KeyboardInterrupt:
        raise TrainingInterrupted(step, save() if step > 0 else None) from None
    record = {
        "format": "edge-ad-teacher/1",
        "architecture": config.architecture,
        "backbone": backbone.record(),
        "projection": projection.record(),
        "targets": "backbone features at the PDN's receptive-field centres, "
        + (
            "each layer averaged over a 3x3 neighbourhood"
            if projection.layout == "mean"
            else "a 3x3 neighbourhood of points concatenated"
            if uses_neighbourhood(backbone)
            else "one point"
        )
        + " (see edge_sdk.training.teacher_targets); the PDN sees the centre 256 px of a "
        f"{WINDOW} px window",
        # By name, count and content fingerprint: the record ships, the path would not mean
        # anything on another machine.
        "photos": {
            "name": photos.folder.name,
            "count": len(photos.files),
            "fingerprint": photos.fingerprint(),
        },
        "augmentation": {
            "scale": list(SCALE_RANGE),
            "hflip": 0.5,
            "grey": GREY_PROBABILITY,
        },
        **(
            {"re_expressed": {"from": re_expressed_from, "after_steps": offset}}
            if re_expressed_from is not None
            else {}
        ),
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "schedule": f"linear warm-up {warmup} steps, cosine to x{FINAL_LR_FACTOR}",
        "weight_decay": WEIGHT_DECAY,
        "seed": config.seed,
        "precision": precision.label,
        "device": str(device),
        "first_loss": first_loss if step else None,
        "final_loss": float(np.mean(history)) if history else None,
        "wall_time_s": round(elapsed, 1),
        "hardware": hardware(device),
        "loss_curve": curve,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    return write_teacher(pdn, config.out, lineage_record(parent, record))
