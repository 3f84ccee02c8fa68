"""What a time budget buys on this machine: ``edge-ad train --time-budget 30m`` sets the
steps from a probe of real steps (:func:`plan_for_budget`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edge_sdk.errors import ConfigError
from edge_sdk.training.recipe import TrainConfig, resolve_device
from edge_sdk.training.trainer import Trainer


@dataclass(frozen=True)
class BudgetPlan:
    """How many steps fit a time budget on this machine, and the measurements behind it."""

    steps: int
    budget_s: float
    step_s: float  # median of the probe steps
    statistics_s: float  # estimated teacher statistics pass before the first step

    def record(self) -> dict[str, Any]:
        return {
            "budget_s": self.budget_s,
            "steps": self.steps,
            "measured_step_s": round(self.step_s, 4),
            "estimated_statistics_s": round(self.statistics_s, 1),
            "covers": "teacher statistics and training steps; not the export and calibration",
        }


PROBE_STEPS = 4  # the first is a warm-up and not counted


def plan_for_budget(config: TrainConfig, budget_s: float) -> BudgetPlan:
    """The steps of ``config``'s run that fit ``budget_s`` seconds here, measured: a probe
    times a few real steps (forward and backward, no weight update) and the teacher on one
    batch, on the same data, device and precision as the run."""
    if budget_s <= 0:
        raise ConfigError(f"time budget: expected a positive duration, found {budget_s} s")
    config.validate()
    device = resolve_device(config.device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        probe = Trainer(config, device)
        zeros = torch.zeros(1, probe.teacher_mean.numel(), 1, 1, device=device)
        times = []
        for _ in range(PROBE_STEPS):
            t0 = time.perf_counter()
            probe.train_step(zeros, zeros + 1)
            times.append(time.perf_counter() - t0)
        probe.optimizer.zero_grad(set_to_none=True)
        step_s = float(np.median(times[1:]))
        # The statistics pass: the teacher over every training image, timed on one batch.
        batch = probe._input(probe.data.train_images[:8])
        t0 = time.perf_counter()
        with torch.no_grad(), probe.autocast():
            probe.teacher(batch)
        statistics_s = (time.perf_counter() - t0) / batch.shape[0] * len(probe.data.train_images)
    steps = max(1, int((budget_s - statistics_s) / step_s))
    return BudgetPlan(steps=steps, budget_s=budget_s, step_s=step_s, statistics_s=statistics_s)
