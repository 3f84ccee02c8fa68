"""`SinkRunner`: one sink behind its own bounded queue and thread.

The pipeline calls `submit()` for every result; it never blocks (a short lock, an
append). The runner's thread delivers in order, retrying failures with exponential
backoff until the item's `retry_deadline_s`, then drops it. With `max_age_s` a result
older than that, counted from the frame's acquisition, is never delivered: it is dropped
and counted as expired (a PLC acting on a stale verdict would act on the wrong part).
When the queue is full an OK is dropped before a reject (NOK or ERROR); a dropped reject
is an alarm (logged at ERROR, counted apart). Every drop is counted, so
`delivered + dropped + queued + in flight` always equals what was submitted.

A sink may have `results_lost(count, why)`: the runner calls it from the delivery thread
after results were dropped, before the next delivery or tick and before closing, so a
signalling sink raises its fault signal for parts it could not signal.

A sink may also have `tick()` and `tick_interval_s`: the runner calls `tick()` from the
same thread between deliveries (the Modbus heartbeat, the MQTT health message), so a
sink never sees two threads at once, and a heartbeat stops when its delivery thread is
stuck.

Over 400 lines on purpose: one class whose submit, delivery loop, retries, drops and
close share one lock and one queue; the invariant above is checked across all of them.

>>> from edge_sdk.sinks.callback import CallbackSink
>>> seen = []
>>> with SinkRunner(CallbackSink(seen.append, name="demo")) as runner:
...     runner.health().state
'ok'
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from edge_sdk.records import Inspection
from edge_sdk.sinks.base import Sink, without_pixels
from edge_sdk.sinks.config import DeliveryConfig
from edge_sdk.sinks.errors import PermanentSinkError

__all__ = ["SinkHealth", "SinkRunner"]

logger = logging.getLogger(__name__)

_LATENCY_WINDOW = 1024


@dataclass(frozen=True)
class SinkHealth:
    """A snapshot of one sink runner. Times are Unix seconds (None: never)."""

    name: str
    state: str  # "ok" | "degraded" | "down"
    reason: str | None
    delivered: int
    failed_attempts: int
    dropped: int
    dropped_rejects: int
    tick_failures: int
    queue_depth: int
    queue_capacity: int
    last_error: str | None
    last_error_at: float | None
    last_success_at: float | None
    latency_p50_ms: float | None  # submit -> sink returned, over the last deliveries
    latency_p99_ms: float | None
    expired: int = 0  # of `dropped`: older than max_age_s before they could be delivered

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


@dataclass(eq=False)
class _Item:
    seq: int
    inspection: Inspection
    submitted: float  # monotonic
    born: float  # monotonic: the frame's acquisition, or the submit when it is not known
    settled: bool = False

    @property
    def is_reject(self) -> bool:
        return self.inspection.result.verdict.is_reject


class _Throttle:
    """At most one log line per key per interval; says how many it swallowed."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next.get(key, 0.0):
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._next[key] = now + self._interval_s
            swallowed = self._suppressed.pop(key, 0)
        if swallowed:
            msg += " (%d similar messages suppressed)"
            args = (*args, swallowed)
        logger.log(level, msg, *args)


class SinkRunner:
    """Runs one sink on its own thread behind a bounded queue (see the module docstring).

    Use as a context manager, or call `close(timeout_s=...)`; both drain what they can
    in time and never hang on a stuck sink.
    """

    def __init__(self, sink: Sink, *, delivery: DeliveryConfig | None = None) -> None:
        self.sink = sink
        self.name: str = sink.name
        self._cfg = delivery or DeliveryConfig()
        self._throttle = _Throttle(self._cfg.log_interval_s)
        self._cond = threading.Condition()
        # Two FIFOs so that "drop the oldest OK" is O(1); `seq` restores one order.
        self._oks: deque[_Item] = deque()
        self._rejects: deque[_Item] = deque()
        self._seq = 0
        self._inflight: _Item | None = None
        self._closing = False
        self._drain_until = float("inf")
        self._stop = threading.Event()  # hard stop: abandon the item in hand
        self._sink_closed = False
        # Counters, guarded by _cond.
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._dropped_rejects = 0
        self._expired = 0
        self._lost_unreported = 0  # drops not yet told to the sink (results_lost)
        self._lost_why: str | None = None
        self._tick_failures = 0
        self._consecutive_failures = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_success_at: float | None = None
        self._last_drop_at = float("-inf")  # monotonic
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        # Drop messages are logged after the lock is released: a slow log handler must
        # not hold up submit() or the delivery thread.
        self._pending_logs: list[tuple[int, str, str, tuple[object, ...]]] = []
        interval = getattr(sink, "tick_interval_s", None)
        self._tick_interval_s: float | None = (
            float(interval) if callable(getattr(sink, "tick", None)) and interval else None
        )
        self._next_tick = time.monotonic()
        self._service_healthy = True
        # Sinks that only signal or record say so (`needs_pixels = False`): their queue
        # then holds no images.
        self._needs_pixels = bool(getattr(sink, "needs_pixels", True))
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    # -- the caller's side ---------------------------------------------------------------
    def submit(self, inspection: Inspection) -> None:
        """Queue one inspection for the sink. Never blocks; never raises for the sink's
        sake (a full queue drops an OK first, a closed runner drops and counts)."""
        if not self._needs_pixels:
            inspection = without_pixels(inspection)
        now, now_ns = time.monotonic(), time.monotonic_ns()
        acquired = inspection.acquired_ns
        born = now - (now_ns - acquired) / 1e9 if 0 < acquired <= now_ns else now
        item = _Item(0, inspection, now, born)
        with self._cond:
            self._seq += 1
            item.seq = self._seq
            if self._closing:
                self._drop(item, "the runner is closed")
            elif len(self._oks) + len(self._rejects) < self._cfg.queue_size:
                self._enqueue(item)
            elif self._oks:
                self._drop(self._oks.popleft(), "the queue is full")
                self._enqueue(item)
            elif not item.is_reject:
                self._drop(item, "the queue is full of rejects")
            else:
                self._drop(self._rejects.popleft(), "the queue is full of rejects")
                self._enqueue(item)
        self._flush_logs()

    def _enqueue(self, item: _Item) -> None:
        (self._rejects if item.is_reject else self._oks).append(item)
        self._cond.notify()

    def set_service_health(self, healthy: bool, detail: dict[str, Any] | None = None) -> None:
        """Pass the service's health to the sink, if it reports it to the line (the Modbus
        heartbeat and fault bit, the MQTT health topic); other sinks ignore it."""
        forward = getattr(self.sink, "set_service_health", None)
        if not callable(forward):
            return
        forward(healthy, detail)
        with self._cond:
            if healthy != self._service_healthy:  # tell the line now, not at the next tick
                self._service_healthy = healthy
                self._next_tick = time.monotonic()
                self._cond.notify()

    def health(self) -> SinkHealth:
        """A consistent snapshot of counters and the state (ok, degraded, down)."""
        reason_from_sink = getattr(self.sink, "degraded_reason", None)
        sink_reason = reason_from_sink() if callable(reason_from_sink) else None
        with self._cond:
            depth = len(self._oks) + len(self._rejects)
            state, reason = "ok", None
            if not self._thread.is_alive() and not self._closing:
                state, reason = "down", "the delivery thread has died"
            elif self._consecutive_failures >= self._cfg.down_after_failures:
                state, reason = "down", f"{self._consecutive_failures} attempts failed in a row"
            elif self._consecutive_failures:
                state, reason = "degraded", "the last attempt failed; retrying"
            elif time.monotonic() - self._last_drop_at < self._cfg.degraded_window_s:
                state, reason = "degraded", "inspections were dropped recently"
            elif depth >= 0.8 * self._cfg.queue_size:
                state, reason = "degraded", f"the queue is {depth}/{self._cfg.queue_size} full"
            elif sink_reason:
                state, reason = "degraded", sink_reason
            latencies = sorted(self._latencies)
            return SinkHealth(
                name=self.name,
                state=state,
                reason=reason,
                delivered=self._delivered,
                failed_attempts=self._failed,
                dropped=self._dropped,
                dropped_rejects=self._dropped_rejects,
                tick_failures=self._tick_failures,
                queue_depth=depth,
                queue_capacity=self._cfg.queue_size,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                last_success_at=self._last_success_at,
                latency_p50_ms=_percentile(latencies, 0.50),
                latency_p99_ms=_percentile(latencies, 0.99),
                expired=self._expired,
            )

    def close(self, *, timeout_s: float = 5.0) -> None:
        """Deliver what can be delivered within `timeout_s`, then close the sink.

        Returns within `timeout_s` (plus scheduling noise) even if the sink hangs: what
        is left is dropped and counted, and a hung thread is abandoned (it is a daemon).
        """
        start = time.monotonic()
        deadline = start + max(timeout_s, 0.0)
        with self._cond:
            if not self._closing:
                self._closing = True
                # A quarter of the time stays for sink.close() (disconnects, flushes).
                self._drain_until = start + 0.75 * max(timeout_s, 0.0)
            self._cond.notify_all()
        self._thread.join(max(0.0, self._drain_until - time.monotonic()))
        if self._thread.is_alive():
            self._stop.set()
            with self._cond:
                self._cond.notify_all()
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            logger.error(
                "sink %s did not stop within %.1f s; abandoning its thread", self.name, timeout_s
            )
            with self._cond:
                if self._inflight is not None:
                    self._drop(self._inflight, "the sink hung while closing")
                self._drop_queued("the sink hung while closing")
            self._flush_logs()
            # Closing its connection from here is the only way to unstick a blocked call.
            threading.Thread(
                target=self._close_sink, name=f"close-{self.name}", daemon=True
            ).start()

    def __enter__(self) -> SinkRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the runner's thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            while (item := self._next_item()) is not None:
                self._deliver(item)
        except Exception:  # a bug here must not die silently: health() reports "down"
            logger.exception("sink %s: the delivery thread failed", self.name)
        finally:
            with self._cond:
                self._drop_queued("the runner stopped before delivering it")
            self._flush_logs()
            self._report_lost()
            self._close_sink()

    def _next_item(self) -> _Item | None:
        while True:
            self._report_lost()
            self._maybe_tick()
            with self._cond:
                if self._stop.is_set():
                    return None
                if self._closing and time.monotonic() >= self._drain_until:
                    return None
                item = self._pop()
                if item is not None and self._too_old(item):
                    self._drop(item, self._age_why(item), expired=True)
                    continue
                if item is not None:
                    self._inflight = item
                    return item
                if self._closing:
                    return None
                wait = None
                if self._tick_interval_s is not None:
                    wait = max(0.0, self._next_tick - time.monotonic())
                self._cond.wait(wait)

    def _pop(self) -> _Item | None:
        if self._oks and (not self._rejects or self._oks[0].seq < self._rejects[0].seq):
            return self._oks.popleft()
        return self._rejects.popleft() if self._rejects else None

    def _deliver(self, item: _Item) -> None:
        first_attempt = time.monotonic()
        attempt = 0
        while True:
            try:
                self.sink(item.inspection)
            except Exception as exc:
                self._record_failure(exc, item)
                if isinstance(exc, PermanentSinkError):
                    self._settle_drop(item, f"not retried: {exc}")
                    return
                delay = min(self._cfg.backoff_initial_s * 2**attempt, self._cfg.backoff_max_s)
                with self._cond:
                    give_up_at = first_attempt + self._cfg.retry_deadline_s
                    if self._closing:
                        give_up_at = min(give_up_at, self._drain_until)
                too_old_at = self._expires_at(item)
                if time.monotonic() + delay > too_old_at and too_old_at <= give_up_at:
                    self._settle_drop(item, self._age_why(item, attempt + 1), expired=True)
                    return
                if time.monotonic() + delay > give_up_at:
                    self._settle_drop(item, f"still failing after {attempt + 1} attempts")
                    return
                attempt += 1
                if self._stop.wait(delay):
                    self._settle_drop(item, "the runner was stopped")
                    return
                continue
            with self._cond:
                self._inflight = None
                if item.settled:  # close() gave up on it meanwhile and counted it dropped
                    return
                item.settled = True
                self._delivered += 1
                self._consecutive_failures = 0
                self._last_success_at = time.time()
                self._latencies.append((time.monotonic() - item.submitted) * 1e3)
            return

    def _expires_at(self, item: _Item) -> float:
        max_age = self._cfg.max_age_s
        return float("inf") if max_age is None else item.born + max_age

    def _too_old(self, item: _Item) -> bool:
        return time.monotonic() >= self._expires_at(item)

    def _age_why(self, item: _Item, attempts: int = 0) -> str:
        age = time.monotonic() - item.born
        tried = f" after {attempts} failed attempts" if attempts else ""
        return f"expired{tried}: {age:.2f} s since acquisition, max_age_s {self._cfg.max_age_s}"

    def _report_lost(self) -> None:
        """Tell the sink (from its own thread) that results were dropped, if it cares."""
        report = getattr(self.sink, "results_lost", None)
        with self._cond:
            count, why = self._lost_unreported, self._lost_why
            self._lost_unreported, self._lost_why = 0, None
        if not count or not callable(report):
            return
        try:
            report(count, why or "dropped")
        except Exception as exc:
            self._throttle.log(
                logging.WARNING,
                "lost",
                "sink %s: signalling lost results failed: %s",
                self.name,
                exc,
            )

    def _maybe_tick(self) -> None:
        if self._tick_interval_s is None or time.monotonic() < self._next_tick:
            return
        self._next_tick = time.monotonic() + self._tick_interval_s
        try:
            self.sink.tick()  # type: ignore[attr-defined]
        except Exception as exc:
            with self._cond:
                self._tick_failures += 1
                self._last_error = f"tick: {type(exc).__name__}: {exc}"
                self._last_error_at = time.time()
            self._throttle.log(logging.WARNING, "tick", "sink %s: tick failed: %s", self.name, exc)

    def _record_failure(self, exc: Exception, item: _Item) -> None:
        with self._cond:
            self._failed += 1
            self._consecutive_failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._last_error_at = time.time()
        self._throttle.log(
            logging.WARNING,
            "failure",
            "sink %s: delivering frame %s failed: %s",
            self.name,
            item.inspection.result.frame_id,
            exc,
        )

    def _settle_drop(self, item: _Item, why: str, *, expired: bool = False) -> None:
        with self._cond:
            self._inflight = None
            self._drop(item, why, expired=expired)
        self._flush_logs()

    def _drop(self, item: _Item, why: str, *, expired: bool = False) -> None:
        """Count one item as dropped (once). Caller holds _cond."""
        if item.settled:
            return
        item.settled = True
        self._dropped += 1
        self._expired += int(expired)
        self._lost_unreported += 1
        self._lost_why = why
        self._last_drop_at = time.monotonic()
        result = item.inspection.result
        args = (self.name, result.verdict.value, result.frame_id, why)
        if item.is_reject:
            self._dropped_rejects += 1
            msg = "sink %s: DROPPED a reject (%s, frame %s): %s"
            self._pending_logs.append((logging.ERROR, "drop-reject", msg, args))
        else:
            msg = "sink %s: dropped a pass (%s, frame %s): %s"
            self._pending_logs.append((logging.WARNING, "drop-ok", msg, args))

    def _flush_logs(self) -> None:
        with self._cond:
            pending, self._pending_logs = self._pending_logs, []
        for level, key, msg, args in pending:
            self._throttle.log(level, key, msg, *args)

    def _drop_queued(self, why: str) -> None:
        while (item := self._pop()) is not None:
            self._drop(item, why)

    def _close_sink(self) -> None:
        with self._cond:
            if self._sink_closed:
                return
            self._sink_closed = True
        try:
            self.sink.close()
        except Exception:
            logger.exception("sink %s: close failed", self.name)


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
