"""The records that flow between the parts of the runtime (DESIGN.md, "Records")."""

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

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary (no arrays)."""
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
        }
