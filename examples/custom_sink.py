"""A custom sink: any callable with a `name` and a `close()`.

Run it:  python examples/custom_sink.py

A sink receives an `Inspection` (the frame, the `Result`, the pixel threshold and
`.overlay()` for the operator's picture) on its own thread, behind a `SinkRunner` that
queues, retries and counts. Raise to report a failed delivery: the runner retries it
with backoff and drops it past its deadline (a dropped reject is logged at ERROR).
Raise `PermanentSinkError` when retrying cannot help.

Optionally, `tick()` with `tick_interval_s` is called from the same thread between
deliveries: a heartbeat, a periodic summary.

In a line config the same class is named by import path (the module must be importable
by the service, e.g. installed or on PYTHONPATH)::

    sinks:
      - type: callback
        target: custom_sink:RejectTally
        options: {report_every_s: 60}
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np

from edge_sdk.records import Frame, Result, Verdict
from edge_sdk.sinks import DeliveryConfig, Inspection, SinkRunner

logger = logging.getLogger("custom_sink")


class RejectTally:
    """Counts verdicts, logs every reject with its score, and a summary now and then."""

    name = "reject-tally"

    def __init__(self, report_every_s: float = 60.0) -> None:
        self.counts: Counter[str] = Counter()
        self.tick_interval_s = report_every_s

    def __call__(self, inspection: Inspection) -> None:
        result = inspection.result
        self.counts[result.verdict.value] += 1
        if result.verdict.is_reject:
            # ERROR is fail-safe: the part is rejected, and someone should look at why.
            logger.warning(
                "reject: camera %s frame %s part %s verdict %s score %.3f %s",
                inspection.frame.camera_id,
                result.frame_id,
                result.part_id,
                result.verdict.value,
                result.score,
                result.error or "",
            )

    def tick(self) -> None:
        logger.info("tally so far: %s", dict(self.counts))

    def close(self) -> None:
        logger.info("final tally: %s", dict(self.counts))


def _demo_inspection(i: int) -> Inspection:
    verdict = Verdict.NOK if i % 5 == 0 else Verdict.OK
    image = np.zeros((32, 32), np.uint8)
    frame = Frame(image, frame_id=i, timestamp_ns=time.time_ns(), camera_id="demo")
    score = 0.9 if verdict is Verdict.NOK else 0.1
    return Inspection(frame, Result(i, verdict, score, 0.5, part_id=f"P{i}"), pixel_threshold=0.1)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tally = RejectTally(report_every_s=0.05)
    runner = SinkRunner(tally, delivery=DeliveryConfig(queue_size=64))
    for i in range(20):
        runner.submit(_demo_inspection(i))  # never blocks the inspection loop
        time.sleep(0.01)
    runner.close(timeout_s=2.0)
    print(runner.health().to_dict())


if __name__ == "__main__":
    main()
