"""The Modbus sink against pymodbus's own TCP server: handshake, heartbeat, PLC outages."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import ModbusPLC, free_port, inspection, wait_until

from edge_sdk.records import Verdict
from edge_sdk.sinks import DeliveryConfig, ModbusSinkConfig, SinkRunner, build_sink

pytest.importorskip("pymodbus")

OK, NOK, FAULT, VALID, ACK = 0, 1, 2, 3, 4
ID, HEARTBEAT = 0, 2


@pytest.fixture()
def plc() -> Iterator[ModbusPLC]:
    server = ModbusPLC().start()
    yield server
    server.stop_plc_ack()
    server.stop()


def config(plc: ModbusPLC, **overrides: Any) -> ModbusSinkConfig:
    values: dict[str, Any] = {
        "type": "modbus",
        "host": "127.0.0.1",
        "port": plc.port,
        "timeout_s": 0.3,
        "pulse_s": 0.02,
        "heartbeat_interval_s": 0.05,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.2,
        **overrides,
    }
    return ModbusSinkConfig.model_validate(values)


def handshakes(plc: ModbusPLC) -> list[tuple[str, int, list[int]]]:
    """Every write but the heartbeat and the fault level between results (the fault bit
    alone, from a tick), in the order the server served them."""
    with plc.lock:
        return [
            (t, a, v)
            for _, t, a, v in plc.writes
            if (t, a) not in (("hr", HEARTBEAT), ("coil", FAULT))
        ]


def test_handshake_bits_echoed_id_strobe_and_fault(plc: ModbusPLC) -> None:
    sink = build_sink(config(plc))
    strobed: list[int] = []
    sink.on_strobe = lambda ins, t_ns: strobed.append(ins.result.frame_id)  # type: ignore[attr-defined]
    runner = SinkRunner(sink)
    runner.submit(inspection(1, Verdict.OK))
    runner.submit(inspection(70_000, Verdict.NOK))  # needs both id words
    runner.submit(inspection(3, Verdict.ERROR))
    assert wait_until(lambda: runner.health().delivered == 3, timeout_s=5)
    runner.close(timeout_s=2)
    assert strobed == [1, 70_000, 3]

    writes = handshakes(plc)
    assert writes[0] == ("coil", VALID, [0])  # a fresh connection drops any stale strobe
    cycles = [writes[1 + 4 * i : 5 + 4 * i] for i in range(3)]
    expected = [((0, 1), [1, 0, 0]), ((1, 4464), [0, 1, 0]), ((0, 3), [0, 1, 1])]
    for cycle, (words, bits) in zip(cycles, expected, strict=True):
        assert cycle == [
            ("hr", ID, list(words)),  # the echoed id first,
            ("coil", OK, bits),  # then ok, nok, fault in one request,
            ("coil", VALID, [1]),  # then the strobe,
            ("coil", VALID, [0]),  # and its reset
        ]
    strobes = plc.writes_to("coil", VALID)[1:]
    for (t_on, on), (t_off, off) in zip(strobes[::2], strobes[1::2], strict=True):
        assert (on, off) == ([1], [0]) and t_off - t_on >= 0.02


def test_heartbeat_increments_and_stops_when_unhealthy(plc: ModbusPLC) -> None:
    sink = build_sink(config(plc))
    runner = SinkRunner(sink)
    assert wait_until(lambda: len(plc.writes_to("hr", HEARTBEAT)) >= 4, timeout_s=3)
    beats = [v[0] for _, v in plc.writes_to("hr", HEARTBEAT)]
    assert beats == list(range(1, len(beats) + 1))

    runner.set_service_health(False)
    assert wait_until(lambda: plc.coils.get(FAULT) == 1, timeout_s=2)
    count = len(plc.writes_to("hr", HEARTBEAT))
    time.sleep(0.3)  # six heartbeat intervals: the PLC's watchdog would trip
    assert len(plc.writes_to("hr", HEARTBEAT)) == count

    runner.set_service_health(True)
    assert wait_until(lambda: len(plc.writes_to("hr", HEARTBEAT)) > count, timeout_s=2)
    assert wait_until(lambda: plc.coils.get(FAULT) == 0, timeout_s=2)
    runner.close(timeout_s=2)


def test_ack_handshake_waits_for_the_plc(plc: ModbusPLC) -> None:
    plc.start_plc_ack(valid=VALID, ack=ACK)
    cfg = config(plc, map={"ack": ACK, "heartbeat": None}, ack_timeout_s=0.5)
    runner = SinkRunner(build_sink(cfg), delivery=DeliveryConfig(retry_deadline_s=0.3))
    for i in range(5):
        runner.submit(inspection(i, Verdict.NOK if i % 2 else Verdict.OK))
    assert wait_until(lambda: runner.health().delivered == 5, timeout_s=5)
    # The PLC drops its last ack one scan after the last strobe fell.
    assert wait_until(lambda: len(plc.writes_to("coil", ACK)) == 10, timeout_s=2)
    acks = plc.writes_to("coil", ACK)
    strobes = plc.writes_to("coil", VALID)[1:]
    assert [v for _, v in acks] == [[1], [0]] * 5
    for i in range(5):  # the strobe falls only after the PLC acknowledged
        assert strobes[2 * i][0] < acks[2 * i][0] < strobes[2 * i + 1][0]

    plc.stop_plc_ack()  # the PLC program hangs: no more acks
    runner.submit(inspection(9, Verdict.NOK))
    assert wait_until(lambda: runner.health().dropped == 1, timeout_s=5)
    h = runner.health()
    assert h.failed_attempts >= 1 and "did not acknowledge frame 9" in (h.last_error or "")
    assert plc.coils.get(VALID) == 0  # never left high
    runner.close(timeout_s=2)


def test_plc_outage_never_blocks_and_delivery_resumes(plc: ModbusPLC) -> None:
    delivery = DeliveryConfig(
        queue_size=8, retry_deadline_s=0.3, backoff_initial_s=0.02, degraded_window_s=0.5
    )
    runner = SinkRunner(build_sink(config(plc)), delivery=delivery)
    runner.submit(inspection(1, Verdict.OK))
    assert wait_until(lambda: runner.health().delivered == 1, timeout_s=5)

    plc.stop()
    submitted, slowest = 1, 0.0
    for i in range(2, 32):
        t0 = time.perf_counter()
        runner.submit(inspection(i, Verdict.NOK if i % 3 == 0 else Verdict.OK))
        slowest = max(slowest, time.perf_counter() - t0)
        submitted += 1
        time.sleep(0.01)
    assert slowest < 0.05
    assert wait_until(lambda: runner.health().state == "down", timeout_s=3)
    h = runner.health()
    assert h.failed_attempts >= 3 and h.dropped >= 1 and h.last_error

    plc.start()  # the PLC is back, same address, fresh memory
    runner.submit(inspection(100, Verdict.NOK))
    submitted += 1
    assert wait_until(lambda: 100 in [v[1] for _, v in plc.writes_to("hr", ID)], timeout_s=5)
    assert wait_until(lambda: runner.health().queue_depth == 0, timeout_s=5)
    runner.close(timeout_s=2)
    h = runner.health()
    assert h.delivered + h.dropped == submitted, h
    assert h.delivered >= 2
    assert len(plc.writes_to("hr", HEARTBEAT)) >= 1  # the heartbeat is back too


def test_a_scanning_plc_latches_every_back_to_back_result(plc: ModbusPLC) -> None:
    # The README's map, no ack, the default pulse times: 10 parts/s, close to the limit.
    defaults = ModbusSinkConfig.model_fields
    cfg = config(plc, pulse_s=defaults["pulse_s"].default)
    assert cfg.pulse_low_s == defaults["pulse_low_s"].default
    scan = plc.start_scanner(valid=VALID, part_id=ID, scan_s=0.005)
    sink = build_sink(cfg)
    runner = SinkRunner(sink, delivery=cfg.delivery)
    for i in range(1, 31):
        runner.submit(inspection(i, Verdict.NOK if i % 4 == 0 else Verdict.OK))
        time.sleep(0.1)
    assert wait_until(lambda: runner.health().delivered == 30, timeout_s=10), runner.health()
    assert wait_until(lambda: len(scan.edges) >= 30, timeout_s=1)
    assert scan.ids() == list(range(1, 31)), f"the PLC's longest scan gap: {scan.max_gap_s}"
    # Both levels last at least their configured times, as the server saw them.
    strobes = plc.writes_to("coil", VALID)[1:]
    highs = [b[0] - a[0] for a, b in zip(strobes[::2], strobes[1::2], strict=False)]
    lows = [b[0] - a[0] for a, b in zip(strobes[1::2], strobes[2::2], strict=False)]
    assert min(highs) >= 0.9 * cfg.pulse_s and min(lows) >= 0.9 * cfg.pulse_low_s
    assert sink.max_results_per_s == pytest.approx(1 / 0.05)  # type: ignore[attr-defined]
    runner.close(timeout_s=2)


def test_a_result_older_than_max_age_raises_the_fault_instead(plc: ModbusPLC) -> None:
    cfg = config(
        plc,
        map={"lost_count": 5},
        fault_hold_s=0.3,
        delivery={"max_age_s": 0.5, "retry_deadline_s": 10, "backoff_max_s": 0.1},
    )
    assert cfg.delivery.max_age_s == 0.5
    sink = build_sink(cfg)
    strobed: list[tuple[int, float]] = []  # (frame id, age at the strobe)
    born: dict[int, int] = {}
    sink.on_strobe = lambda ins, t: strobed.append(  # type: ignore[attr-defined]
        (ins.result.frame_id, (t - born[ins.result.frame_id]) / 1e9)
    )
    runner = SinkRunner(sink, delivery=cfg.delivery)

    def submit(frame_id: int) -> None:
        item = inspection(frame_id, Verdict.NOK)
        born[frame_id] = item.acquired_ns
        runner.submit(item)

    submit(1)
    assert wait_until(lambda: runner.health().delivered == 1, timeout_s=5)
    plc.stop()  # a PLC outage of about 2 s while parts keep coming
    for i in range(2, 22):
        submit(i)
        time.sleep(0.1)
    plc.start()
    submit(100)
    assert wait_until(lambda: 100 in [f for f, _ in strobed], timeout_s=5), strobed
    assert wait_until(lambda: plc.registers.get(5, 0) > 0, timeout_s=2)
    runner.close(timeout_s=2)
    h = runner.health()
    assert max(age for _, age in strobed) < 0.5 + 0.1, strobed  # never a stale verdict
    assert h.expired >= 10 and h.expired == h.dropped, h
    assert h.delivered + h.dropped == 22, h
    # The PLC learnt of the lost parts: the fault bit rose once it was back, and it counts
    assert plc.registers.get(5) == h.expired
    fault_writes = [v for t, v in plc.writes_to("coil", FAULT)]
    assert [1] in fault_writes, fault_writes


def test_holding_register_mode_and_part_id_echo(plc: ModbusPLC) -> None:
    cfg = config(
        plc,
        bits="holding",
        echo="part_id",
        map={
            "ok": 10,
            "nok": 11,
            "fault": 12,
            "result_valid": 13,
            "part_id": 20,
            "part_id_words": 1,
            "heartbeat": 21,
        },
    )
    with SinkRunner(build_sink(cfg)) as runner:
        runner.submit(inspection(5, Verdict.NOK, part_id="4242"))
        runner.submit(inspection(6, Verdict.OK, part_id="SN-X"))  # not a number: frame id
        assert wait_until(lambda: runner.health().delivered == 2, timeout_s=5)
    ids = [v for _, v in plc.writes_to("hr", 20)]
    bits = [v for _, v in plc.writes_to("hr", 10)]
    assert ids == [[4242], [6]] and bits == [[0, 1, 0], [1, 0, 0]]
    assert [v for _, v in plc.writes_to("hr", 13)] == [[0], [1], [0], [1], [0]]


def test_overlapping_addresses_are_refused() -> None:
    with pytest.raises(ValueError, match=r"map\.result_valid and map\.ok both use coil 3"):
        ModbusSinkConfig(type="modbus", host="plc", map={"ok": 3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"heartbeat and map\.part_id"):
        ModbusSinkConfig(type="modbus", host="plc", map={"heartbeat": 1})  # type: ignore[arg-type]


def test_plc_handshake_example_runs() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "plc_handshake.py"
    out = subprocess.run(
        [sys.executable, str(example), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "PLC: part 2: NOK -> eject" in out.stdout
    assert "PLC: part 4: FAULT -> eject" in out.stdout
    assert "'delivered': 4" in out.stdout
