"""Source -> Inspector -> sinks, on two threads with a bounded queue between them.

The contract with the line: in per-part mode every acquired frame gets exactly one
Result, delivered to every sink, even when the model fails, the deadline passes, the
queue overflows or the process is shutting down; anything uncertain is ERROR (a reject).

    acquisition thread          inspection thread              sink runners (own threads)
    source.read() --> queue --> deadline? inspect, deadline? --> submit() never blocks

Modes (what happens when inspection is slower than the camera):
    per_part   nothing is dropped: frames wait in the queue; one that waited past its
               deadline gets ERROR without inference, and a frame that finds the queue
               full gets ERROR at once. For triggered lines, where each frame is a part.
    free_run   the newest frame wins: a waiting frame is replaced by a newer one and
               counted as dropped. For continuous monitoring.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from edge_sdk.line.options import Mode, PipelineOptions
from edge_sdk.line.snapshot import PipelineSnapshot
from edge_sdk.line.stats import LatencyWindow, PipelineStats
from edge_sdk.records import Frame, Inspection, Result, Verdict
from edge_sdk.runtime.inspector import Inspector
from edge_sdk.sources.base import FrameSource
from edge_sdk.sources.errors import (
    EndOfStreamError,
    FrameTimeoutError,
    SourceClosedError,
    SourceError,
)

log = logging.getLogger(__name__)

# Mode and PipelineOptions live in options.py (line.yaml reads them without the pipeline)
# and are the pipeline's own API too.
__all__ = ["Mode", "Pipeline", "PipelineOptions", "ResultSink", "new_run_id"]


class ResultSink(Protocol):
    """What the pipeline hands results to: `submit` must never block (see SinkRunner)."""

    name: str

    def submit(self, inspection: Inspection) -> None: ...

    def close(self, *, timeout_s: float) -> None: ...


def new_run_id() -> str:
    """A name for one run of a pipeline, unique across restarts: its start in UTC and
    random bits (two runs may start in the same second).

    >>> len(new_run_id()), new_run_id() != new_run_id()
    (23, True)
    """
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class _Queued:
    frame: Frame
    acquired_ns: int


class Pipeline:
    """Runs a source through an inspector into sinks until stopped or the source ends.

    The pipeline takes ownership of the source (opens and closes it) and closes the sinks
    on stop; the inspector stays the caller's.
    """

    def __init__(
        self,
        source: FrameSource,
        inspector: Inspector,
        sinks: Sequence[ResultSink] = (),
        options: PipelineOptions | None = None,
    ) -> None:
        self.source = source
        self.inspector = inspector
        self.sinks = list(sinks)
        self.options = options or PipelineOptions()
        size = 1 if self.options.mode is Mode.FREE_RUN else self.options.queue_size
        self._queue: queue.Queue[_Queued] = queue.Queue(maxsize=size)
        self._stats = PipelineStats()
        self._latency = LatencyWindow(self.options.keep_latency_samples)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._acquisition_done = threading.Event()
        self._finished = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_progress = time.monotonic()
        self._latest: Inspection | None = None
        # The frame being inspected, and the one close() failed safe while it was (whose
        # late verdict is dropped). _delivering makes each frame's verdict go out once.
        self._in_flight: _Queued | None = None
        self._abandoned: _Queued | None = None
        self._delivering = threading.RLock()
        self._started_at = 0.0
        self.source_error: str | None = None
        self.run_id = new_run_id()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Open the source and start the threads. Returns once frames can flow."""
        self.source.open()
        self._started_at = time.monotonic()
        self._threads = [
            threading.Thread(target=self._acquire_loop, name="edge-ad-acquire", daemon=True),
            threading.Thread(target=self._inspect_loop, name="edge-ad-inspect", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask the pipeline to finish: no new frames; frames in flight are inspected
        within `drain_timeout_s`, the rest fail safe. Thread-safe; returns at once."""
        self._stopping.set()
        self.source.stop()

    def wait(self, *, timeout_s: float | None = None) -> bool:
        """Wait until the pipeline has finished (source ended or stopped and drained)."""
        return self._finished.wait(timeout_s)

    def close(self) -> None:
        """Stop, drain, close sinks and the source. Never hangs past the set timeouts."""
        self.stop()
        limit = self.options.drain_timeout_s + self.options.read_timeout_s + 2.0
        for thread in self._threads:
            thread.join(timeout=limit)
        abandoned, queued = self._fail_abandoned(), self._fail_queued()
        if abandoned or queued:
            log.warning(
                "stopping: inspection ran past %.1f s (a starved CPU?); failed safe: %d "
                "queued frames%s",
                limit,
                queued,
                " and the one being inspected" if abandoned else "",
            )
        waiting = {
            name: h["queue_depth"]
            for name, h in self.snapshot().sinks.items()
            if isinstance(h, dict) and h.get("queue_depth")
        }
        if waiting:  # a stop that takes seconds should say why while it happens
            log.warning(
                "stopping: results still queued for %s; waiting up to %.0f s for the sinks",
                ", ".join(f"{name} ({n})" for name, n in waiting.items()),
                self.options.sink_close_timeout_s,
            )
        # All sinks drain at once, each within sink_close_timeout_s: a slow PLC must not
        # eat the time the MQTT sink needs, nor the sum exceed the unit's stop timeout.
        closers = [
            threading.Thread(target=self._close_sink, args=(sink,), name="edge-ad-close")
            for sink in self.sinks
        ]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join(self.options.sink_close_timeout_s + 1.0)
        self.source.close()

    def _fail_abandoned(self) -> bool:
        """Fail safe the frame still being inspected after the stop's time limit: its
        verdict would come after the sinks close, or never if the process exits first."""
        # The inspection's own verdict waits, then is dropped. A sink whose submit blocks
        # (it must not) holds the lock: then the stop goes on without waiting for it.
        if not self._delivering.acquire(timeout=self.options.sink_close_timeout_s):
            log.error(
                "stopping: a sink's submit() blocked for %.0f s; the frame being inspected "
                "gets no shutdown verdict",
                self.options.sink_close_timeout_s,
            )
            return False
        try:
            with self._lock:
                item, self._in_flight = self._in_flight, None
            if item is None:
                return False
            self._fail_at_shutdown(item, "after inspection ran past the stop's time limit")
            self._abandoned = item
            return True
        finally:
            self._delivering.release()

    def _fail_queued(self) -> int:
        """Fail safe every frame still queued. Empty unless the inspection thread outlived
        the stop's time limit: the process may exit next, and no acquired frame may leave
        without a verdict."""
        failed = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return failed
            self._fail_at_shutdown(item)
            failed += 1

    def _fail_at_shutdown(
        self, item: _Queued, why: str = "before this frame could be inspected"
    ) -> None:
        with self._lock:
            self._stats.shutdown_failsafe += 1
        self._fail(item, f"shutting down {why}")

    def _close_sink(self, sink: ResultSink) -> None:
        try:
            sink.close(timeout_s=self.options.sink_close_timeout_s)
        except Exception:
            log.exception("closing sink %s failed", getattr(sink, "name", sink))

    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def last_progress(self) -> float:
        """time.monotonic() of the last loop tick or result: the service's watchdog feed."""
        return self._last_progress

    def health(self, *, stall_after_s: float) -> tuple[bool, str | None]:
        """Whether inspection can vouch for the line now, and if not, why: stopped, the
        camera lost (acquisition ticks do not count while it is), or nothing moved for
        `stall_after_s`."""
        if self.finished:
            return False, "inspection has stopped"
        if not self.source.connected:
            return False, f"camera {self.source.camera_id!r} lost"
        if time.monotonic() - self._last_progress >= stall_after_s:
            return False, f"inspection stalled for {stall_after_s:g} s"
        return True, None

    @property
    def latest(self) -> Inspection | None:
        return self._latest

    # -- acquisition thread ------------------------------------------------------------
    def _acquire_loop(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                self._last_progress = time.monotonic()
                try:
                    frame = self.source.read(timeout_s=self.options.read_timeout_s)
                except FrameTimeoutError:
                    continue
                except (EndOfStreamError, SourceClosedError):
                    break
                except SourceError as exc:
                    # One unreadable file or buffer: no frame was acquired, so there is no
                    # part to give a verdict to. Count it; give up only if it persists.
                    failures += 1
                    self.source_error = f"{type(exc).__name__}: {exc}"
                    with self._lock:
                        self._stats.source_errors += 1
                    log.error("frame source error (%d in a row): %s", failures, exc)
                    if failures >= self.options.max_source_errors:
                        break
                    self._stopping.wait(min(1.0, 0.05 * failures))
                    continue
                except Exception as exc:  # a bug in a source ends the run, loudly
                    self.source_error = f"{type(exc).__name__}: {exc}"
                    log.exception("frame source failed")
                    break
                failures = 0
                self._enqueue(_Queued(frame, time.monotonic_ns()))
        finally:
            self._acquisition_done.set()

    def _enqueue(self, item: _Queued) -> None:
        with self._lock:
            self._stats.frames += 1
        if self.options.mode is Mode.FREE_RUN:
            try:
                self._queue.get_nowait()
                with self._lock:
                    self._stats.dropped_free_run += 1
            except queue.Empty:
                pass
            self._queue.put_nowait(item)  # the only producer: a slot is free now
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self._stats.queue_overflows += 1
            self._fail(item, "inspection queue full: the line is faster than inspection")

    # -- inspection thread -------------------------------------------------------------
    def _inspect_loop(self) -> None:
        drain_until: float | None = None
        try:
            while True:
                if self._acquisition_done.is_set() and drain_until is None:
                    drain_until = time.monotonic() + self.options.drain_timeout_s
                try:
                    item = self._queue.get(timeout=self.options.read_timeout_s)
                except queue.Empty:
                    if self._acquisition_done.is_set():
                        return
                    continue
                if drain_until is not None and time.monotonic() > drain_until:
                    self._fail_at_shutdown(item)
                    continue
                with self._lock:
                    self._in_flight = item
                try:
                    self._inspect(item)
                except Exception as exc:  # a bug must not lose the part: fail it safe
                    log.exception("inspecting frame %s failed", item.frame.frame_id)
                    self._fail(item, f"internal error: {type(exc).__name__}: {exc}")
        except Exception:  # a bug here must not strand frames: fail what is queued
            log.exception("inspection loop crashed; failing the frames in flight")
            while True:
                try:
                    self._fail(self._queue.get_nowait(), "inspection loop crashed")
                except queue.Empty:
                    break
            raise
        finally:
            self._finished.set()

    def _inspect(self, item: _Queued) -> None:
        deadline_ns = item.acquired_ns + int(self.options.deadline_ms * 1e6)
        dequeued = time.monotonic_ns()
        if dequeued > deadline_ns:
            waited = (dequeued - item.acquired_ns) / 1e6
            self._fail(
                item,
                f"deadline missed before inspection: waited {waited:.1f} ms, "
                f"deadline {self.options.deadline_ms:g} ms",
                deadline=True,
            )
            return
        result = self.inspector.inspect_frame(item.frame)
        done = time.monotonic_ns()
        if done > deadline_ns and result.verdict is not Verdict.ERROR:
            result = replace(
                result,
                verdict=Verdict.ERROR,
                error=(
                    f"deadline missed: verdict after {(done - item.acquired_ns) / 1e6:.1f} ms, "
                    f"deadline {self.options.deadline_ms:g} ms"
                ),
            )
            with self._lock:
                self._stats.deadline_misses += 1
        self._deliver(item, result, queue_ms=(dequeued - item.acquired_ns) / 1e6)

    def _fail(self, item: _Queued, reason: str, *, deadline: bool = False) -> None:
        result = Result(
            frame_id=item.frame.frame_id,
            part_id=item.frame.part_id,
            verdict=Verdict.ERROR,
            score=float("nan"),
            threshold=self.inspector.image_threshold,
            image_shape=item.frame.image.shape,
            error=reason,
        )
        if deadline:
            with self._lock:
                self._stats.deadline_misses += 1
        self._deliver(item, result, queue_ms=(time.monotonic_ns() - item.acquired_ns) / 1e6)

    def _deliver(self, item: _Queued, result: Result, *, queue_ms: float) -> None:
        inspection = Inspection(
            frame=item.frame,
            result=result,
            pixel_threshold=self.inspector.pixel_threshold,
            acquired_ns=item.acquired_ns,
            run_id=self.run_id,
        )
        t0 = time.monotonic_ns()
        with self._delivering:
            with self._lock:
                late = item is self._abandoned
                if item is self._in_flight:
                    self._in_flight = None
            if late:
                log.warning(
                    "frame %s: its verdict (%s) came after the stop had failed it safe; dropped",
                    item.frame.frame_id,
                    result.verdict.value,
                )
                return
            for sink in self.sinks:
                try:
                    sink.submit(inspection)
                except Exception:  # submit must not raise; if it does, the others get it
                    log.exception("sink %s refused a result", getattr(sink, "name", sink))
        t1 = time.monotonic_ns()
        lat = result.latency
        with self._lock:
            self._stats.results += 1
            self._stats.verdicts[result.verdict.value] += 1
            self._latency.add(
                queue=queue_ms,
                preprocess=lat.preprocess_ms,
                infer=lat.infer_ms,
                decide=lat.decide_ms,
                signal=(t1 - t0) / 1e6,
                total=(t1 - item.acquired_ns) / 1e6,
            )
        self._latest = inspection
        self._last_progress = time.monotonic()

    # -- reporting ---------------------------------------------------------------------
    def snapshot(self) -> PipelineSnapshot:
        """Counters, latency percentiles (ms), source and sink health."""
        with self._lock:
            stats = replace(self._stats, verdicts=dict(self._stats.verdicts))
            latency = self._latency.summary()
        sinks = {}
        for sink in self.sinks:
            health = getattr(sink, "health", None)
            if callable(health):
                value = health()
                sinks[sink.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return PipelineSnapshot(
            run_id=self.run_id,
            mode=self.options.mode.value,
            uptime_s=time.monotonic() - self._started_at if self._started_at else 0.0,
            frames=stats.frames,
            results=stats.results,
            in_flight=stats.frames - stats.results - stats.dropped_free_run,
            verdicts=stats.verdicts,
            deadline_misses=stats.deadline_misses,
            queue_overflows=stats.queue_overflows,
            dropped_free_run=stats.dropped_free_run,
            shutdown_failsafe=stats.shutdown_failsafe,
            source_errors=stats.source_errors,
            latency_ms=latency,
            source=self.source.stats,
            source_connected=self.source.connected,
            source_error=self.source_error,
            sinks=sinks,
            provider=self.inspector.provider,
        )
