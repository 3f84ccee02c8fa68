"""The records that flow between the parts (docs/architecture.md, "Records"): a Frame from
a source, the Inspector's Result, and the Inspection that sinks receive (both together).

Every part may import this module; it imports no other part at import time. Only
`Inspection`'s drawing helpers (`full_map`, `overlay`) reach into the runtime, when called.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class Verdict(str, enum.Enum):
    """What the line is told about one part. ERROR is fail-safe: treat it as a reject."""

    OK = "OK"
    NOK = "NOK"
    ERROR = "ERROR"

    @property
    def is_reject(self) -> bool:
        """True for NOK and ERROR: anything but a clear pass rejects the part."""
        return self is not Verdict.OK


@dataclass(frozen=True, slots=True)
class Frame:
    """One acquired image and where it came from."""

    image: np.ndarray  # uint8, HxW (grey) or HxWxC (BGR order, as OpenCV)
    frame_id: int
    timestamp_ns: int
    camera_id: str = ""
    part_id: str | None = None


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-stage wall time of one inspection, in milliseconds.

    In a batch, preprocess/infer/decide are the batch's time divided by its size.
    """

    preprocess_ms: float = 0.0
    infer_ms: float = 0.0
    decide_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.infer_ms + self.decide_ms


@dataclass(frozen=True, slots=True)
class Result:
    """The verdict for one frame. `anomaly_map` is the normalised combined map at model
    resolution (e.g. 64x64 with the 4 px pad); `Inspector.full_map` scales it to the image.
    """

    frame_id: int
    verdict: Verdict
    score: float
    threshold: float
    anomaly_map: np.ndarray | None = field(default=None, repr=False)
    image_shape: tuple[int, ...] = ()
    latency: Latency = field(default_factory=Latency)
    part_id: str | None = None
    error: str | None = None
    # The graph whose maps decided ("int8", "fp16", "fp32"); "fp32" also where a faster
    # variant's score fell near the threshold and the float32 graph re-decided the part.
    graph: str = ""
    # A tiled bundle: the region and tile where the part scored highest.
    worst_tile: str | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary (no arrays); `worst_tile` only from a tiled bundle."""
        extra = {} if self.worst_tile is None else {"worst_tile": self.worst_tile}
        return {
            "frame_id": self.frame_id,
            "part_id": self.part_id,
            "verdict": self.verdict.value,
            "score": None if np.isnan(self.score) else round(self.score, 6),
            "threshold": self.threshold,
            "latency_ms": {
                "preprocess": round(self.latency.preprocess_ms, 3),
                "infer": round(self.latency.infer_ms, 3),
                "decide": round(self.latency.decide_ms, 3),
                "total": round(self.latency.total_ms, 3),
            },
            "error": self.error,
            "graph": self.graph or None,
            **extra,
        }


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
