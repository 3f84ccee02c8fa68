"""Sink health as Prometheus text (exposition format 0.0.4), for the metrics endpoint.

>>> from edge_sdk.sinks.runner import SinkHealth
>>> h = SinkHealth("plc", "ok", None, 12, 1, 0, 0, 0, 0, 256, None, None, None, 3.5, 9.0)
>>> text = prometheus_text([h])
>>> 'edge_ad_sink_delivered_total{sink="plc"} 12' in text.splitlines()
True
>>> 'edge_ad_sink_state{sink="plc",state="down"} 0' in text.splitlines()
True
"""

from __future__ import annotations

from collections.abc import Iterable

from edge_sdk.sinks.runner import SinkHealth

__all__ = ["prometheus_text"]

_STATES = ("ok", "degraded", "down")

# (metric, type, help, SinkHealth field)
_SERIES = (
    ("edge_ad_sink_delivered_total", "counter", "Inspections delivered.", "delivered"),
    (
        "edge_ad_sink_failed_attempts_total",
        "counter",
        "Failed delivery attempts.",
        "failed_attempts",
    ),
    ("edge_ad_sink_dropped_total", "counter", "Inspections never delivered.", "dropped"),
    (
        "edge_ad_sink_dropped_rejects_total",
        "counter",
        "NOK/ERROR inspections never delivered (an alarm).",
        "dropped_rejects",
    ),
    (
        "edge_ad_sink_tick_failures_total",
        "counter",
        "Failed heartbeats/health messages.",
        "tick_failures",
    ),
    (
        "edge_ad_sink_expired_total",
        "counter",
        "Inspections not delivered because they were older than max_age_s.",
        "expired",
    ),
    ("edge_ad_sink_queue_depth", "gauge", "Inspections waiting.", "queue_depth"),
    ("edge_ad_sink_queue_capacity", "gauge", "Queue bound.", "queue_capacity"),
    ("edge_ad_sink_latency_p50_ms", "gauge", "Submit to delivered, median.", "latency_p50_ms"),
    ("edge_ad_sink_latency_p99_ms", "gauge", "Submit to delivered, 99th pct.", "latency_p99_ms"),
)


def prometheus_text(healths: Iterable[SinkHealth]) -> str:
    """One block per metric, one sample per sink; states one-hot in `edge_ad_sink_state`."""
    healths = list(healths)
    lines: list[str] = []
    for metric, kind, help_text, field in _SERIES:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for h in healths:
            value = getattr(h, field)
            if value is not None:
                lines.append(f'{metric}{{sink="{_label(h.name)}"}} {value}')
    lines += [
        "# HELP edge_ad_sink_state 1 for the sink's current state.",
        "# TYPE edge_ad_sink_state gauge",
    ]
    for h in healths:
        for state in _STATES:
            lines.append(
                f'edge_ad_sink_state{{sink="{_label(h.name)}",state="{state}"}} '
                f"{int(h.state == state)}"
            )
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
