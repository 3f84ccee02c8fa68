"""One EfficientAD training run's state and its step (reference ``efficientad.py``).

Per step: the frozen teacher's output on the image and on a jittered copy, normalised by
its channel statistics, is the target; the student's first half learns it through the
hard-feature loss (plus the penalty on a generic photo, when given); the autoencoder learns
it on the jittered copy, and the student's second half learns the autoencoder's output.
Adam (lr 1e-4, weight decay 1e-5) on student and autoencoder; the learning rate drops x0.1
at 95 % of the steps.

Four things make the step cheaper than the reference's without changing what it computes
(``benchmarks/train_step.py`` times both and compares their loss curves):

- the teacher's output on the unaugmented training images never changes: it is kept from
  the statistics pass (:class:`TeacherCache`) instead of recomputed every step;
- the student runs once on the image, the penalty photo and the jittered copy together;
- its last convolution computes only the half of its output channels that each input's
  loss reads (:func:`student_halves`): for EfficientAD-S that halves its largest layer;
- Adam runs fused (:func:`~edge_sdk.training.recipe.adam`): the same update in one kernel.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_sdk.training import networks as nets
from edge_sdk.training.data import (
    PenaltyImages,
    SampleOrder,
    TrainingData,
    augment_for_autoencoder,
    load_training_data,
    step_rng,
)
from edge_sdk.training.inference_graph import normalise
from edge_sdk.training.losses import P_HARD, efficientad_losses, teacher_channel_stats
from edge_sdk.training.recipe import (
    LR_DECAY_AT,
    LR_DECAY_FACTOR,
    RANDOM_TEACHER,
    WEIGHT_DECAY,
    Progress,
    ProgressCallback,
    TeacherSource,
    TrainConfig,
    adam,
    precision_for,
    resolve_teacher,
)

LOSS_WINDOW = 100  # steps over which reported losses are averaged
STATS_BATCH = 8
# Memory for the teacher's outputs on the training images: 2.4 MB an image in bfloat16,
# 4.8 MB in float32. Images past the budget get the teacher run at each step instead.
TEACHER_CACHE_BYTES = 4 << 30


class TeacherCache:
    """The frozen teacher's raw output on each (unaugmented) training image, kept while
    within ``budget`` bytes. Filled by the statistics pass, or by the steps after a resume."""

    def __init__(self, budget: int = TEACHER_CACHE_BYTES) -> None:
        self.budget = budget
        self.used = 0
        self.outputs: dict[int, torch.Tensor] = {}

    def put(self, index: int, output: torch.Tensor) -> None:
        size = output.numel() * output.element_size()
        if index not in self.outputs and self.used + size <= self.budget:
            # clone: a view would keep the whole batch's storage alive.
            self.outputs[index] = output.detach().clone()
            self.used += size

    def get(self, index: int) -> torch.Tensor | None:
        return self.outputs.get(index)


def student_halves(
    student: nn.Sequential, images: torch.Tensor, *, teacher_half: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's outputs that the losses read, from one pass over ``images``: the
    teacher half (first 384 channels) of the first ``teacher_half`` images, the autoencoder
    half (last 384) of the rest. The last convolution's output channels are independent, so
    each input gets only the half it needs: the same numbers as slicing the full output."""
    head = student[-1]
    if not isinstance(head, nn.Conv2d) or head.bias is None or head.padding_mode != "zeros":
        raise TypeError(f"the student must end in a plain convolution, found {head}")
    features = student[:-1](images)
    c = nets.TEACHER_CHANNELS

    def conv(x: torch.Tensor, channels: slice) -> torch.Tensor:
        assert head.bias is not None
        w, b = head.weight[channels], head.bias[channels]
        return F.conv2d(x, w, b, head.stride, head.padding, head.dilation, head.groups)

    return conv(features[:teacher_half], slice(0, c)), conv(features[teacher_half:], slice(c, None))


# Fingerprint entries added after the first checkpoints, with the value runs had before.
FINGERPRINT_BEFORE: dict[str, Any] = {"resize": "area", "tiling": None}


def fingerprint(
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
        "resize": config.resize,
        "tiling": None if config.tiling is None else config.tiling.model_dump(mode="json"),
        "recipe": [config.lr, WEIGHT_DECAY, LR_DECAY_AT, LR_DECAY_FACTOR, P_HARD],
    }


class Trainer:
    """One run's data, networks, optimiser and step count: what a checkpoint holds.

    ``train_step`` computes the losses and gradients of step ``self.step``; ``update``
    applies them. The caller advances ``step`` (see the interrupt logic in ``fit``).
    """

    def __init__(
        self, config: TrainConfig, device: torch.device, *, fused_adam: bool = True
    ) -> None:
        self.config = config
        self.device = device
        self.teacher_source = resolve_teacher(config.teacher, config.architecture)
        self.penalty = PenaltyImages(config.penalty) if config.penalty is not None else None
        self.data = load_training_data(
            config.data,
            val_fraction=config.val_fraction,
            seed=config.seed,
            resize=config.resize,
            tiling=config.tiling,
        )
        self.fingerprint = fingerprint(config, self.data, self.teacher_source, self.penalty)
        self.precision = precision_for(device, config.bf16)
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
            # (torch's stubs lack Module.to's memory_format keyword.)
            module.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.teacher.eval().requires_grad_(False)
        self.student.train()
        self.autoencoder.train()
        self.optimizer = adam(
            itertools.chain(self.student.parameters(), self.autoencoder.parameters()),
            config.lr,
            fused=fused_adam,
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=max(1, int(LR_DECAY_AT * config.steps)), gamma=LR_DECAY_FACTOR
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.scaler)
        self.teacher_mean = torch.zeros(nets.TEACHER_CHANNELS)
        self.teacher_std = torch.ones(nets.TEACHER_CHANNELS)
        self.teacher_cache = TeacherCache()
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

        starts = iter(range(0, n, STATS_BATCH))

        def batches() -> Iterator[torch.Tensor]:
            for start in range(0, n, STATS_BATCH):
                if progress is not None:
                    progress(Progress("statistics", start, n))
                yield self._input(images[start : start + STATS_BATCH])

        def keep(outputs: torch.Tensor) -> None:
            start = next(starts)
            for i, output in enumerate(outputs):
                self.teacher_cache.put(start + i, output)

        with self.autocast():
            mean, std = teacher_channel_stats(self.teacher, batches(), keep)
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

    def step_inputs(
        self,
    ) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What step ``self.step`` draws: the images' indices, the images, their jittered
        copies and the penalty photos (None without), as network input. Seeds torch's
        generator for the step's dropout."""
        rng = step_rng(self.config.seed, self.step)
        torch.manual_seed(int(rng.integers(2**62)))
        indices = self.order.indices(self.step)
        raw = torch.from_numpy(self.data.train_images[indices])
        image_st = self._input(raw)
        image_ae = self._input(augment_for_autoencoder(raw.float(), rng))
        image_penalty = None
        if self.penalty is not None:
            image_penalty = self._input(self.penalty.draw(rng, self.config.batch_size))
        return indices, image_st, image_ae, image_penalty

    def train_step(self, mean: torch.Tensor, std: torch.Tensor) -> dict[str, float]:
        """One optimiser step; leaves ``self.step`` to the caller (see the interrupt logic)."""
        indices, image_st, image_ae, image_penalty = self.step_inputs()
        batch = image_st.shape[0]
        cached = [self.teacher_cache.get(i) for i in indices]
        missing = [k for k, out in enumerate(cached) if out is None]
        with self.autocast():
            with torch.no_grad():
                fresh = self.teacher(torch.cat([image_st[missing], image_ae]))
                for k, out in zip(missing, fresh, strict=False):
                    self.teacher_cache.put(indices[k], out)
                    cached[k] = out
                teacher_st = torch.stack([out for out in cached if out is not None])
                teacher_st = (teacher_st.float() - mean) / std
                teacher_ae = (fresh[len(missing) :].float() - mean) / std
            # The student's inputs in one pass: image and penalty photo (teacher half), then
            # the jittered copy (autoencoder half).
            first = [image_st] + ([image_penalty] if image_penalty is not None else [])
            teacher_half = batch * len(first)
            student_first, student_ae = student_halves(
                self.student, torch.cat([*first, image_ae]), teacher_half=teacher_half
            )
            ae_out = self.autoencoder(image_ae)
        losses = efficientad_losses(
            teacher_st=teacher_st,
            student_st=student_first[:batch],
            teacher_ae=teacher_ae,
            autoencoder_ae=ae_out,
            student_ae=student_ae,
            student_penalty=student_first[batch:] if image_penalty is not None else None,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses.total).backward()
        return losses.values()

    def update(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
