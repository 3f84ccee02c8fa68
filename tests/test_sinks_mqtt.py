"""The MQTT sink against a real mosquitto broker started by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import Mosquitto, Subscriber, inspection, wait_until

from edge_sdk.records import Verdict
from edge_sdk.sinks import DeliveryConfig, MqttSinkConfig, SinkRunner, build_sink

pytest.importorskip("paho.mqtt")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture()
def subscriber(broker: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port, "line1/#")
    yield sub
    sub.close()


def config(broker: Mosquitto, **overrides: Any) -> MqttSinkConfig:
    values: dict[str, Any] = {
        "type": "mqtt",
        "host": "127.0.0.1",
        "port": broker.port,
        "topic_prefix": "line1",
        "keepalive_s": 2,
        "publish_timeout_s": 1.0,
        "health_interval_s": 0.1,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.4,
        **overrides,
    }
    return MqttSinkConfig.model_validate(values)


def states(sub: Subscriber) -> list[str]:
    return [p["state"] for p in sub.on("/cam0/health")]


def test_results_and_health_arrive(broker: Mosquitto, subscriber: Subscriber) -> None:
    sink = build_sink(config(broker), camera="cam0")
    runner = SinkRunner(sink)
    assert subscriber.wait_for(lambda m: "online" in states(subscriber), timeout_s=5)
    for i in range(10):
        runner.submit(inspection(i, Verdict.NOK if i % 3 == 0 else Verdict.OK))
    assert subscriber.wait_for(lambda m: len(subscriber.on("/cam0/result")) == 10, timeout_s=5)
    results = subscriber.on("/cam0/result")
    assert [r["frame_id"] for r in results] == list(range(10))
    assert results[3]["verdict"] == "NOK" and results[3]["camera"] == "cam0"
    assert set(results[0]) >= {"timestamp", "part_id", "score", "threshold", "latency", "error"}

    sink.set_service_health(False, {"frames": 10})  # type: ignore[attr-defined]
    assert subscriber.wait_for(
        lambda m: any(p.get("healthy") is False for p in subscriber.on("/cam0/health")), 5
    )
    runner.close(timeout_s=3)
    assert subscriber.wait_for(lambda m: states(subscriber)[-1:] == ["offline"], timeout_s=5)
    assert subscriber.on("/cam0/health")[-1]["reason"] == "stopped"
    h = runner.health()
    assert (h.delivered, h.dropped, h.failed_attempts) == (10, 0, 0)


def test_last_will_marks_the_service_offline_when_it_dies(
    broker: Mosquitto, subscriber: Subscriber
) -> None:
    script = textwrap.dedent(f"""
        import time
        from edge_sdk.sinks import MqttSinkConfig, build_sink
        config = MqttSinkConfig(type="mqtt", host="127.0.0.1", port={broker.port},
                                topic_prefix="line1", camera="cam0", health_interval_s=60)
        sink = build_sink(config)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        assert subscriber.wait_for(lambda m: "online" in states(subscriber), timeout_s=10)
        os.kill(proc.pid, signal.SIGKILL)  # no DISCONNECT: only the broker can tell
        proc.wait(5)
        assert subscriber.wait_for(lambda m: states(subscriber)[-1:] == ["offline"], 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    last = subscriber.on("/cam0/health")[-1]
    assert last["reason"] == "connection lost"
    # Retained: a dashboard that connects later still learns that the service is gone.
    late = Subscriber(broker.port, "line1/cam0/health")
    try:
        assert late.wait_for(lambda m: len(m) >= 1, timeout_s=5)
        assert late.messages[0][1]["state"] == "offline" and late.messages[0][2]
    finally:
        late.close()


def test_broker_restart_reconnects_and_resumes(broker: Mosquitto, subscriber: Subscriber) -> None:
    delivery = DeliveryConfig(retry_deadline_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.2)
    runner = SinkRunner(build_sink(config(broker), camera="cam0"), delivery=delivery)
    for i in range(5):
        runner.submit(inspection(i, Verdict.NOK))
    assert wait_until(lambda: runner.health().delivered == 5, timeout_s=5)

    broker.stop()
    slowest = 0.0
    for i in range(5, 15):
        t0 = time.perf_counter()
        runner.submit(inspection(i, Verdict.NOK if i % 2 else Verdict.OK))
        slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 0.05
    assert wait_until(lambda: runner.health().failed_attempts >= 3, timeout_s=5)
    assert runner.health().state in ("degraded", "down")
    assert wait_until(lambda: runner.health().dropped >= 1, timeout_s=5)

    broker.start()
    # Both clients come back on their own; the sink says "online" again (retained).
    n_online = states(subscriber).count("online")
    assert subscriber.wait_for(lambda m: states(subscriber).count("online") > n_online, 10)
    for i in range(100, 105):
        runner.submit(inspection(i, Verdict.NOK))
    assert subscriber.wait_for(
        lambda m: {r["frame_id"] for r in subscriber.on("/cam0/result")} >= set(range(100, 105)),
        timeout_s=5,
    )
    runner.close(timeout_s=3)
    h = runner.health()
    assert h.delivered + h.dropped == 20, h
    received = {r["frame_id"] for r in subscriber.on("/cam0/result")}
    assert received <= set(range(15)) | set(range(100, 105))
    assert h.delivered >= 10


def test_a_long_broker_outage_loses_nothing_and_results_flow_again_soon(
    broker: Mosquitto, subscriber: Subscriber
) -> None:
    # The sink type's defaults: the reconnect backoff, the retry deadline, the queue.
    cfg = config(
        broker,
        reconnect_min_s=0.5,
        reconnect_max_s=MqttSinkConfig.model_fields["reconnect_max_s"].default,
    )
    runner = SinkRunner(build_sink(cfg, camera="cam0"), delivery=cfg.delivery)
    runner.submit(inspection(1, Verdict.OK, size=(480, 640)))
    assert wait_until(lambda: runner.health().delivered == 1, timeout_s=5)
    broker.stop()
    for i in range(2, 26):  # 12 s down: past the old 10 s retry deadline
        runner.submit(inspection(i, Verdict.NOK if i % 3 else Verdict.OK, size=(480, 640)))
        time.sleep(0.5)
    # What waits holds no pixels: an outage costs kilobytes, not frames.
    with runner._cond:
        waiting = list(runner._oks) + list(runner._rejects)
    assert waiting and all(item.inspection.frame.image.size == 0 for item in waiting)
    broker.start()
    back = time.monotonic()
    assert subscriber.wait_for(
        lambda m: {r["frame_id"] for r in subscriber.on("/cam0/result")} >= set(range(1, 26)),
        timeout_s=15,
    )
    assert time.monotonic() - back < 4.0  # paho's backoff capped near 2 s, not 30
    runner.close(timeout_s=2)
    h = runner.health()
    assert h.dropped == 0 and h.delivered == 25, h
