"""What a running line has done so far: :class:`PipelineSnapshot`, the typed record that
``Pipeline.snapshot()`` returns and the health endpoint, the metrics, the command line and the
service's status line read; ``to_dict()`` is its JSON form (``/status``, ``run --json``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from edge_sdk.records import Verdict
from edge_sdk.sources.base import SourceStats

__all__ = ["PipelineSnapshot"]


def _no_verdicts() -> dict[str, int]:
    return {v.value: 0 for v in Verdict}


@dataclass(frozen=True)
class PipelineSnapshot:
    """Counters since the line started, latency percentiles per stage (ms: ``p50``, ``p99``,
    ``n``), the source's counters and each sink's health (its JSON form, by sink name).

    >>> snap = PipelineSnapshot(frames=3, results=3, verdicts={"OK": 2, "NOK": 1, "ERROR": 0})
    >>> snap.p50_ms("infer") is None, snap.to_dict()["source"]["lost"]
    (True, 0)
    """

    run_id: str = ""
    mode: str = "per_part"
    uptime_s: float = 0.0
    frames: int = 0
    results: int = 0
    in_flight: int = 0
    verdicts: Mapping[str, int] = field(default_factory=_no_verdicts)
    deadline_misses: int = 0
    queue_overflows: int = 0
    dropped_free_run: int = 0
    shutdown_failsafe: int = 0
    source_errors: int = 0
    latency_ms: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    source: SourceStats = field(default_factory=SourceStats)
    source_connected: bool = False
    source_error: str | None = None
    sinks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    provider: str = ""

    def p50_ms(self, stage: str) -> float | None:
        """The median latency of ``stage`` (queue, preprocess, infer, decide, signal, total),
        None before the first result."""
        value = self.latency_ms.get(stage, {}).get("p50")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain dicts and numbers."""
        out = asdict(self)
        out["verdicts"] = dict(self.verdicts)
        out["latency_ms"] = {k: dict(v) for k, v in self.latency_ms.items()}
        out["sinks"] = {k: dict(v) for k, v in self.sinks.items()}
        return out
