"""A pipeline's counters and latency window since its start (what its snapshot copies)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_sdk.records import Verdict

STAGES = ("queue", "preprocess", "infer", "decide", "signal", "total")


class LatencyWindow:
    """The last N samples of each stage, for p50/p99 without unbounded memory."""

    def __init__(self, size: int) -> None:
        self._samples = {stage: deque[float](maxlen=size) for stage in STAGES}

    def add(self, **ms: float) -> None:
        for stage, value in ms.items():
            self._samples[stage].append(value)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, values in self._samples.items():
            if values:
                arr = np.fromiter(values, dtype=np.float64)
                p50, p99 = np.percentile(arr, [50, 99])
                out[stage] = {"p50": float(p50), "p99": float(p99), "n": len(values)}
        return out


@dataclass
class PipelineStats:
    """Counters since start; `snapshot()` gives a JSON-ready copy."""

    frames: int = 0
    results: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: {v.value: 0 for v in Verdict})
    deadline_misses: int = 0
    queue_overflows: int = 0
    dropped_free_run: int = 0
    shutdown_failsafe: int = 0
    source_errors: int = 0
