"""SinkRunner: submit never blocks, rejects outlive passes, close never hangs, counts add up."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest
from servers import inspection, wait_until

from edge_sdk.records import Inspection, Verdict
from edge_sdk.sinks import CallbackSink, DeliveryConfig, PermanentSinkError, SinkRunner
from edge_sdk.sinks import runner as runner_module


class Gate:
    """A sink that blocks each delivery until released; records what it delivered."""

    name = "gate"

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.delivered: list[int] = []
        self.threads: set[int] = set()
        self.closed = False

    def __call__(self, ins: Inspection) -> None:
        self.entered.set()
        self.threads.add(threading.get_ident())
        if not self.open.wait(10):
            raise TimeoutError("gate never opened")
        self.delivered.append(ins.result.frame_id)

    def close(self) -> None:
        self.closed = True


def accounted(runner: SinkRunner, submitted: int) -> None:
    h = runner.health()
    assert h.delivered + h.dropped + h.queue_depth == submitted, h


def test_slow_sink_never_blocks_submit() -> None:
    seen: list[int] = []

    def slow(ins: Inspection) -> None:
        time.sleep(0.05)
        seen.append(ins.result.frame_id)

    runner = SinkRunner(CallbackSink(slow, name="slow"), delivery=DeliveryConfig(queue_size=64))
    durations = []
    for i in range(400):
        verdict = Verdict.NOK if i % 10 == 0 else Verdict.OK
        t0 = time.perf_counter()
        runner.submit(inspection(i, verdict, size=(4, 4)))
        durations.append(time.perf_counter() - t0)
    # 400 x 50 ms of sink work would be 20 s; submitting all of it takes milliseconds.
    assert sum(durations) < 0.5
    assert max(durations) < 0.05, max(durations)
    h = runner.health()
    assert h.dropped > 300 and h.dropped_rejects == 0  # the 40 rejects fit in the queue
    assert h.state == "degraded"
    runner.close(timeout_s=2.0)
    h = runner.health()
    assert h.delivered == len(seen)
    assert h.delivered + h.dropped == 400, h


def test_a_full_queue_drops_passes_before_rejects(caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate()
    runner = SinkRunner(gate, delivery=DeliveryConfig(queue_size=4, log_interval_s=0))
    runner.submit(inspection(0, Verdict.OK, size=(4, 4)))  # taken by the thread, then held
    assert gate.entered.wait(5)
    verdicts = [Verdict.OK, Verdict.NOK, Verdict.OK, Verdict.ERROR, Verdict.OK, Verdict.NOK]
    for i, verdict in enumerate(verdicts, start=1):
        runner.submit(inspection(i, verdict, size=(4, 4)))
    h = runner.health()
    assert (h.queue_depth, h.dropped, h.dropped_rejects) == (4, 2, 0)
    # Only rejects are left; one more pass is refused, one more reject pushes out the oldest.
    runner.submit(inspection(7, Verdict.NOK, size=(4, 4)))  # drops OK 5
    runner.submit(inspection(8, Verdict.OK, size=(4, 4)))  # dropped itself
    with caplog.at_level(logging.ERROR, logger=runner_module.__name__):
        runner.submit(inspection(9, Verdict.ERROR, size=(4, 4)))  # drops NOK 2, an alarm
    assert any("DROPPED a reject" in r.getMessage() for r in caplog.records)
    h = runner.health()
    assert (h.dropped, h.dropped_rejects) == (5, 1)
    gate.open.set()
    runner.close(timeout_s=5.0)
    assert gate.delivered == [0, 4, 6, 7, 9]  # in submission order
    assert runner.health().delivered == 5
    accounted(runner, 10)


def test_close_returns_on_time_with_a_hung_sink() -> None:
    gate = Gate()  # never opened
    runner = SinkRunner(gate)
    for i in range(5):
        runner.submit(inspection(i, Verdict.NOK, size=(4, 4)))
    assert gate.entered.wait(5)
    t0 = time.monotonic()
    runner.close(timeout_s=0.5)
    assert time.monotonic() - t0 < 0.8
    h = runner.health()
    assert (h.delivered, h.dropped, h.dropped_rejects, h.queue_depth) == (0, 5, 5, 0)
    runner.submit(inspection(5, Verdict.OK, size=(4, 4)))  # after close: counted, not queued
    assert runner.health().dropped == 6
    gate.open.set()  # the abandoned call returns later: it must not count twice
    time.sleep(0.1)
    assert runner.health().delivered == 0 and runner.health().dropped == 6


def test_failures_are_retried_with_backoff_then_dropped() -> None:
    attempts: list[float] = []

    def flaky(ins: Inspection) -> None:
        attempts.append(time.monotonic())
        if ins.result.frame_id == 1 and len(attempts) < 3:
            raise ConnectionError("PLC busy")
        if ins.result.frame_id == 2:
            raise ConnectionError("PLC gone")

    delivery = DeliveryConfig(
        retry_deadline_s=0.3, backoff_initial_s=0.02, backoff_max_s=0.1, degraded_window_s=0.5
    )
    runner = SinkRunner(CallbackSink(flaky, name="flaky"), delivery=delivery)
    runner.submit(inspection(1, Verdict.NOK, size=(4, 4)))
    assert wait_until(lambda: runner.health().delivered == 1, timeout_s=2)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[1] > gaps[0] * 1.5  # exponential
    h = runner.health()
    assert (h.failed_attempts, h.state) == (2, "ok")
    assert h.last_error == "ConnectionError: PLC busy"

    attempts.clear()
    runner.submit(inspection(2, Verdict.NOK, size=(4, 4)))
    assert wait_until(lambda: runner.health().state == "down", timeout_s=2)
    assert wait_until(lambda: runner.health().dropped == 1, timeout_s=2)
    assert attempts[-1] - attempts[0] <= 0.3
    h = runner.health()
    assert h.dropped_rejects == 1 and "failed in a row" in (h.reason or "")
    runner.close(timeout_s=1.0)


def test_a_permanent_error_is_dropped_without_retrying() -> None:
    calls = []

    def full(ins: Inspection) -> None:
        calls.append(ins.result.frame_id)
        raise PermanentSinkError("disk full")

    with SinkRunner(CallbackSink(full, name="full")) as runner:
        runner.submit(inspection(1, Verdict.NOK, size=(4, 4)))
        assert wait_until(lambda: runner.health().dropped == 1, timeout_s=2)
    assert calls == [1]
    assert runner.health().failed_attempts == 1


def test_close_delivers_what_is_queued() -> None:
    delivered: list[int] = []
    runner = SinkRunner(CallbackSink(lambda ins: delivered.append(ins.result.frame_id)))
    for i in range(50):
        runner.submit(inspection(i, size=(4, 4)))
    runner.close(timeout_s=5.0)
    assert delivered == list(range(50))
    h = runner.health()
    assert (h.delivered, h.dropped, h.state) == (50, 0, "ok")
    assert h.latency_p50_ms is not None and h.latency_p99_ms is not None


def test_ticks_run_on_the_delivery_thread_and_failures_count() -> None:
    class Beating(Gate):
        tick_interval_s = 0.02

        def __init__(self) -> None:
            super().__init__()
            self.ticks = 0
            self.open.set()

        def tick(self) -> None:
            self.threads.add(threading.get_ident())
            self.ticks += 1
            if self.ticks == 3:
                raise OSError("heartbeat write failed")

    sink = Beating()
    with SinkRunner(sink) as runner:
        runner.submit(inspection(1, size=(4, 4)))
        assert wait_until(lambda: sink.ticks >= 5, timeout_s=2)
        h = runner.health()
    assert len(sink.threads) == 1  # ticks and deliveries never overlap
    assert h.tick_failures == 1 and "heartbeat" in (h.last_error or "")
    assert sink.closed
