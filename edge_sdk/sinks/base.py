"""The sink protocol, and the pixel-free copy of an inspection that queues hold.

The record every sink receives, `Inspection`, lives with the other records
(`edge_sdk.records`) and is re-exported here and by `edge_sdk.sinks`.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from edge_sdk.records import Inspection

__all__ = ["Inspection", "Sink", "without_pixels"]


_NO_PIXELS = np.zeros((0, 0), np.uint8)


def without_pixels(inspection: Inspection) -> Inspection:
    """The inspection without its image and map: what a queue holds for a sink that only
    signals or records (a few kB, not megabytes, while it waits out an outage)."""
    frame = dataclasses.replace(inspection.frame, image=_NO_PIXELS)
    result = dataclasses.replace(inspection.result, anomaly_map=None)
    return dataclasses.replace(inspection, frame=frame, result=result)


class Sink(Protocol):
    """A callable that delivers one inspection somewhere; it may raise on failure (the
    runner counts, logs and retries). `close` releases connections."""

    name: str

    def __call__(self, inspection: Inspection) -> None: ...

    def close(self) -> None: ...
