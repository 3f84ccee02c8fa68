"""Prometheus text (exposition format 0.0.4): the one renderer (`render`), and sink health
in it (`prometheus_text`); the line's own counters use the same renderer (line/health.py).

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

__all__ = ["Family", "prometheus_text", "render"]

# One metric family: name, type, help text, samples of (labels, value).
Family = tuple[str, str, str, list[tuple[dict[str, str], float]]]

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


def render(families: Iterable[Family]) -> str:
    """HELP and TYPE lines, then one sample per label set; label values escaped.

    >>> print(render([("edge_ad_x_total", "counter", "X.", [({"a": 'q"'}, 2), ({}, 1)])]), end="")
    # HELP edge_ad_x_total X.
    # TYPE edge_ad_x_total counter
    edge_ad_x_total{a="q\\""} 2
    edge_ad_x_total 1
    """
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            label = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")
    return "\n".join(lines) + "\n"


def prometheus_text(healths: Iterable[SinkHealth]) -> str:
    """One block per metric, one sample per sink; states one-hot in `edge_ad_sink_state`."""
    healths = list(healths)
    families: list[Family] = [
        (
            metric,
            kind,
            help_text,
            [
                ({"sink": h.name}, getattr(h, field))
                for h in healths
                if getattr(h, field) is not None
            ],
        )
        for metric, kind, help_text, field in _SERIES
    ]
    families.append(
        (
            "edge_ad_sink_state",
            "gauge",
            "1 for the sink's current state.",
            [
                ({"sink": h.name, "state": st}, int(h.state == st))
                for h in healths
                for st in _STATES
            ],
        )
    )
    return render(families)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
