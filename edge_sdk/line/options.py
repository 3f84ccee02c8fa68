"""How a pipeline runs (:class:`PipelineOptions`), the options line.yaml's `pipeline:`
section holds: pydantic checks the field constraints when they come from the file."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field


class Mode(str, enum.Enum):
    PER_PART = "per_part"
    FREE_RUN = "free_run"


@dataclass(frozen=True)
class PipelineOptions:
    """How the pipeline runs; also line.yaml's `pipeline:` section, where the constraints
    are checked."""

    mode: Mode = Mode.PER_PART
    deadline_ms: Annotated[float, Field(gt=0)] = 1000.0  # acquisition to verdict
    queue_size: Annotated[int, Field(ge=1)] = 64  # per_part: frames that may wait
    # One wait for a frame; stop() takes effect within it.
    read_timeout_s: Annotated[float, Field(gt=0)] = 0.2
    drain_timeout_s: Annotated[float, Field(ge=0)] = 5.0  # on stop: frames in flight
    sink_close_timeout_s: Annotated[float, Field(ge=0)] = 5.0
    keep_latency_samples: Annotated[int, Field(ge=1)] = 2048
    # Consecutive source errors that end the run.
    max_source_errors: Annotated[int, Field(ge=1)] = 10
