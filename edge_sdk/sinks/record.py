"""The JSON shape of one result, shared by the JSON-lines, MQTT and archive sinks.

>>> import numpy as np
>>> from edge_sdk.records import Frame, Result, Verdict
>>> from edge_sdk.records import Inspection
>>> frame = Frame(np.zeros((4, 4), np.uint8), frame_id=7, timestamp_ns=1_700_000_000 * 10**9,
...               camera_id="cam0", part_id="A-17")
>>> result = Result(frame_id=7, verdict=Verdict.NOK, score=0.8, threshold=0.5, part_id="A-17")
>>> record = result_record(Inspection(frame, result, pixel_threshold=0.1))
>>> record["timestamp"], record["verdict"], record["part_id"]
('2023-11-14T22:13:20.000000Z', 'NOK', 'A-17')
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from edge_sdk.records import Inspection

# Cameras may stamp frames with their own clock (ns since power-up). Anything before
# 2001 cannot be wall-clock time, so the record falls back to the host clock then.
_PLAUSIBLE_EPOCH_NS = 978_307_200 * 10**9


def iso_utc(timestamp_ns: int) -> str:
    """ISO 8601 UTC with microseconds and a trailing Z.

    >>> iso_utc(0)
    '1970-01-01T00:00:00.000000Z'
    """
    moment = dt.datetime.fromtimestamp(timestamp_ns / 1e9, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wall_time_ns(inspection: Inspection) -> int:
    """The frame's timestamp if it is wall-clock time, else the host clock now."""
    stamp = inspection.frame.timestamp_ns
    return stamp if stamp >= _PLAUSIBLE_EPOCH_NS else time.time_ns()


def result_record(inspection: Inspection) -> dict[str, Any]:
    """One result as a JSON-ready dict: timestamp, run_id, camera, frame_id, part_id, verdict,
    score and threshold (None when not finite: JSON has no NaN), latency (ms per stage)
    and error."""
    result, frame = inspection.result, inspection.frame
    score = round(float(result.score), 6) if math.isfinite(result.score) else None
    latency = result.latency
    return {
        "timestamp": iso_utc(wall_time_ns(inspection)),
        "run_id": inspection.run_id or None,
        "camera": frame.camera_id,
        "frame_id": result.frame_id,
        "part_id": result.part_id if result.part_id is not None else frame.part_id,
        "verdict": result.verdict.value,
        "score": score,
        "threshold": float(result.threshold) if math.isfinite(result.threshold) else None,
        "latency": {
            "preprocess_ms": round(latency.preprocess_ms, 3),
            "infer_ms": round(latency.infer_ms, 3),
            "decide_ms": round(latency.decide_ms, 3),
            "total_ms": round(latency.total_ms, 3),
        },
        "error": result.error,
    }
