"""The record every sink receives, and the sink protocol."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_sdk.records import Frame, Result


@dataclass(frozen=True)
class Inspection:
    """One frame and its verdict, as handed to sinks (after the verdict is final)."""

    frame: Frame
    result: Result
    pixel_threshold: float
    # time.monotonic_ns() when the pipeline received the frame: sinks measure end-to-end
    # latency (acquired to signal delivered) against it.
    acquired_ns: int = 0
    # Names the pipeline run: frame ids start again at 1 after a restart, so consumers key
    # on (run_id, camera, frame_id).
    run_id: str = ""

    def full_map(self) -> np.ndarray | None:
        """The anomaly map at the frame's size, or None for an ERROR without a map."""
        from edge_sdk.runtime.scoring import upsample

        if self.result.anomaly_map is None:
            return None
        h, w = self.frame.image.shape[:2]
        return upsample(self.result.anomaly_map, h, w)

    def overlay(self) -> np.ndarray:
        """The operator's picture (heatmap, contours, verdict). Costly at full size: sinks
        call it off the critical path, only for what they keep."""
        from edge_sdk.runtime.overlay import render_error_overlay, render_overlay

        full = self.full_map()
        if full is None:
            return render_error_overlay(self.frame.image, self.result.error or "no map")
        return render_overlay(
            self.frame.image,
            full,
            pixel_threshold=self.pixel_threshold,
            verdict=self.result.verdict,
            score=self.result.score,
            image_threshold=self.result.threshold,
        )


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
