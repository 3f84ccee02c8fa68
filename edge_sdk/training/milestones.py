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
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from edge_sdk.errors import ConfigError
from edge_sdk.training.checkpoint import load_checkpoint, save_checkpoint
from edge_sdk.training.recipe import (
    LR_DECAY_AT,
    LR_DECAY_FACTOR,
    ProgressCallback,
    TrainConfig,
    resolve_device,
)
from edge_sdk.training.train import FitResult, fit_result
from edge_sdk.training.trainer import FINGERPRINT_BEFORE, Trainer

logger = logging.getLogger(__name__)


def decay_step(steps: int) -> int:
    """The step from which an ``steps``-step run trains at the lowered rate.

    >>> decay_step(1000), decay_step(1)
    (950, 1)
    """
    return max(1, int(LR_DECAY_AT * steps))


def fit_milestones(
    config: TrainConfig,
    milestones: Sequence[int],
    *,
    progress: ProgressCallback | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 100,
) -> Iterator[FitResult]:
    """The models of ``config`` trained for each of ``milestones`` steps (ascending), one
    at a time, from one run of ``max(milestones)`` steps. ``config.steps`` is ignored.

    ``checkpoint``: a file the main run is saved to every ``checkpoint_every`` steps, at
    each fork and before the last model, and continued from when it exists: a benchmark
    of many hours can span sessions. The models it had given are not given again; one whose
    consumer was interrupted is. Without it, nothing is written.
    """
    steps = sorted(set(milestones))
    if not steps or steps[0] < 1:
        raise ConfigError(f"milestones: expected step counts of at least 1, found {milestones}")
    config = dataclasses.replace(config, steps=steps[-1])
    config.validate()
    device = resolve_device(config.device)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices, device_type=device.type):
        run = Trainer(config, device)
        fingerprint = {**run.fingerprint, "milestones": steps}
        done: list[int] = []
        main_s = 0.0  # the main run's own time: a fork's is not part of later models
        state = None
        if checkpoint is not None and checkpoint.exists():
            state = load_checkpoint(checkpoint, fingerprint=fingerprint, older=FINGERPRINT_BEFORE)
        # Also on resume: its teacher outputs are cached as in a run never stopped, so the
        # models are the same weight for weight.
        run.measure_teacher(progress)
        if state is not None:
            run.restore(state)
            done, main_s = list(state["milestones_done"]), float(state["main_s"])
        mean = run.teacher_mean.to(device).view(1, -1, 1, 1)
        std = run.teacher_std.to(device).view(1, -1, 1, 1)

        def save(spent_s: float) -> None:
            if checkpoint is not None:
                state = {**run.state(), "fingerprint": fingerprint}
                save_checkpoint(checkpoint, {**state, "milestones_done": done, "main_s": spent_s})

        def advance(to_step: int, t0: float) -> None:
            while run.step < to_step:
                next_save = (run.step // checkpoint_every + 1) * checkpoint_every
                _advance(run, min(to_step, next_save), mean, std)
                if run.step % checkpoint_every == 0 and run.step < to_step:
                    spent_s = main_s + time.perf_counter() - t0
                    save(spent_s)
                    logger.info(
                        "step %d of %d, %.2f s a step", run.step, steps[-1], spent_s / run.step
                    )

        for target in (s for s in steps if s not in done):
            if target != steps[-1] and run.step > decay_step(target):
                raise ConfigError(
                    f"{checkpoint}: the run is at step {run.step}, past the fork of the "
                    f"{target}-step model at step {decay_step(target)}; start it again"
                )
            t0 = time.perf_counter()
            advance(decay_step(target), t0)
            if target == steps[-1]:  # the run's own schedule lowers the rate here
                advance(target, t0)
                main_s += time.perf_counter() - t0
                save(main_s)
                yield _result(run, config, device, main_s)
                return
            main_s += time.perf_counter() - t0
            save(main_s)
            t0 = time.perf_counter()
            before = copy.deepcopy(run.state())
            for group in run.optimizer.param_groups:
                group["lr"] = config.lr * LR_DECAY_FACTOR
            _advance(run, target, mean, std, keep_lr=True)
            result = _result(run, config, device, main_s + time.perf_counter() - t0)
            run.history.clear()
            run.restore(before)
            yield result
            done.append(target)
            save(main_s)


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
