"""One training run that gives the models of several shorter runs: what 1,000, 3,000 and
10,000 steps buy, for the cost of about 10,500 steps instead of 14,000.

An N-step run trains ``int(0.95 N)`` steps at the full learning rate, then the rest at a
tenth of it (:data:`~edge_sdk.training.recipe.LR_DECAY_AT`). Every random draw of a step
is a function of ``(seed, step)`` and the data order does not depend on N, so the first
``int(0.95 N)`` steps of the longest run are those of the N-step run. At that step the
run forks: the fork lowers the rate, trains to step N and gives the N-step model; the main
run goes on from the state before the fork. The models are those of separate runs, weight
for weight (``tests/test_training_run.py`` checks it).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator, Sequence

import torch

from edge_sdk.errors import ConfigError
from edge_sdk.training.recipe import (
    LR_DECAY_AT,
    LR_DECAY_FACTOR,
    ProgressCallback,
    TrainConfig,
    resolve_device,
)
from edge_sdk.training.train import FitResult, fit_result
from edge_sdk.training.trainer import Trainer


def decay_step(steps: int) -> int:
    """The step from which an ``steps``-step run trains at the lowered rate.

    >>> decay_step(1000), decay_step(1)
    (950, 1)
    """
    return max(1, int(LR_DECAY_AT * steps))


def fit_milestones(
    config: TrainConfig, milestones: Sequence[int], *, progress: ProgressCallback | None = None
) -> Iterator[FitResult]:
    """The models of ``config`` trained for each of ``milestones`` steps (ascending), one
    at a time, from one run of ``max(milestones)`` steps. ``config.steps`` is ignored; no
    checkpoints are written (a benchmark's run, not a user's)."""
    steps = sorted(set(milestones))
    if not steps or steps[0] < 1:
        raise ConfigError(f"milestones: expected step counts of at least 1, found {milestones}")
    config = dataclasses.replace(config, steps=steps[-1])
    config.validate()
    device = resolve_device(config.device)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices, device_type=device.type):
        run = Trainer(config, device)
        run.measure_teacher(progress)
        mean = run.teacher_mean.to(device).view(1, -1, 1, 1)
        std = run.teacher_std.to(device).view(1, -1, 1, 1)
        main_s = 0.0  # the main run's own time: a fork's is not part of later models
        for target in steps:
            t0 = time.perf_counter()
            _advance(run, decay_step(target), mean, std)
            if target == steps[-1]:  # the run's own schedule lowers the rate here
                _advance(run, target, mean, std)
                yield _result(run, config, device, main_s + time.perf_counter() - t0)
                return
            main_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            before = copy.deepcopy(run.state())
            for group in run.optimizer.param_groups:
                group["lr"] = config.lr * LR_DECAY_FACTOR
            _advance(run, target, mean, std, keep_lr=True)
            result = _result(run, config, device, main_s + time.perf_counter() - t0)
            run.history.clear()
            run.restore(before)
            yield result


def _advance(
    run: Trainer, to_step: int, mean: torch.Tensor, std: torch.Tensor, *, keep_lr: bool = False
) -> None:
    """Train until ``run.step == to_step``. ``keep_lr``: the rate set by the fork stays
    (the main run's scheduler would lower it again at its own decay step)."""
    rates = [group["lr"] for group in run.optimizer.param_groups]
    while run.step < to_step:
        run.history.append(run.train_step(mean, std))
        run.update()
        run.step += 1
        if keep_lr:
            for group, lr in zip(run.optimizer.param_groups, rates, strict=True):
                group["lr"] = lr


def _result(run: Trainer, config: TrainConfig, device: torch.device, wall_s: float) -> FitResult:
    checkpoint = config.checkpoint_folder()
    return fit_result(run, device, wall_time_s=wall_s, checkpoint=checkpoint, copy=True)
