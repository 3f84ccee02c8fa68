"""Real servers for the sink tests: a pymodbus TCP server standing in for the PLC, and a
mosquitto broker started from its binary. Nothing here is a mock: the sinks talk to them
over TCP on a free loopback port. Also the inspections the sinks receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk.records import Frame, Inspection, Result, Verdict


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], *, timeout_s: float, poll_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def inspection(
    frame_id: int,
    verdict: Verdict = Verdict.OK,
    *,
    camera: str = "cam0",
    part_id: str | None = None,
    size: tuple[int, int] = (48, 64),
    acquired_ns: int | None = None,
) -> Inspection:
    """A small, complete inspection (ERROR ones carry no map, as the inspector's)."""
    rng = np.random.default_rng(frame_id)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    error = "model failed" if verdict is Verdict.ERROR else None
    amap = None if error else rng.random((8, 8), dtype=np.float32) * 0.2
    score = float("nan") if error else (0.8 if verdict is Verdict.NOK else 0.2)
    frame = Frame(image, frame_id, time.time_ns(), camera_id=camera, part_id=part_id)
    result = Result(
        frame_id,
        verdict,
        score,
        0.5,
        anomaly_map=amap,
        image_shape=image.shape,
        part_id=part_id,
        error=error,
    )
    acquired = time.monotonic_ns() if acquired_ns is None else acquired_ns
    return Inspection(frame, result, pixel_threshold=0.1, acquired_ns=acquired)


# -- Modbus ----------------------------------------------------------------------------
class ModbusPLC:
    """pymodbus's own TCP server on a thread, with a log of every write it served.

    `plc_ack` makes it behave like a PLC program with an ack handshake: a scan loop that
    raises the ack coil when result_valid rises and drops it when result_valid falls
    (through a Modbus client, as any other writer).
    """

    def __init__(self, *, unit_id: int = 1, size: int = 64) -> None:
        pytest.importorskip("pymodbus")
        self.port = free_port()
        self.unit_id = unit_id
        self.size = size
        self.lock = threading.Lock()
        self.writes: list[tuple[float, str, int, list[int]]] = []  # (t, table, address, values)
        self.coils: dict[int, int] = {}
        self.registers: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._plc_stop = threading.Event()
        self._plc_thread: threading.Thread | None = None

    async def _action(
        self, fc: int, start: int, address: int, count: int, regs: list[int], values: Any
    ) -> None:
        if values is None:
            return
        table = "coil" if fc in (5, 15) else "hr"
        values = [int(v) for v in (values if isinstance(values, list) else [values])]
        with self.lock:
            self.writes.append((time.monotonic(), table, address, values))
            store = self.coils if table == "coil" else self.registers
            for i, v in enumerate(values):
                store[address + i] = v

    def start(self) -> ModbusPLC:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        def block(kind: DataType) -> list[SimData]:
            return [SimData(0, count=self.size, values=0, datatype=kind)]

        bits, regs = block(DataType.BITS), block(DataType.REGISTERS)
        device = SimDevice(
            self.unit_id,
            simdata=(bits, block(DataType.BITS), regs, block(DataType.REGISTERS)),
            action=self._action,
        )
        ready = threading.Event()
        self._loop = loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
            ready.set()
            await self._server.serve_forever()

        def run() -> None:
            with contextlib.suppress(Exception):
                loop.run_until_complete(serve())

        self._thread = threading.Thread(target=run, name="modbus-plc", daemon=True)
        self._thread.start()
        ready.wait(5)
        assert wait_until(self._accepts, timeout_s=5), "pymodbus server did not start"
        return self

    def _accepts(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()
        self._loop = self._server = None

    def start_plc_ack(self, *, valid: int, ack: int, scan_s: float = 0.002) -> None:
        from pymodbus.client import ModbusTcpClient

        client = ModbusTcpClient("127.0.0.1", port=self.port, timeout=1, retries=0)

        def scan() -> None:
            while not self._plc_stop.wait(scan_s):
                with self.lock:
                    v, a = self.coils.get(valid, 0), self.coils.get(ack, 0)
                if v != a:
                    with contextlib.suppress(Exception):
                        client.write_coil(ack, bool(v), device_id=self.unit_id)
            client.close()

        self._plc_thread = threading.Thread(target=scan, name="plc-scan", daemon=True)
        self._plc_thread.start()

    def stop_plc_ack(self) -> None:
        self._plc_stop.set()
        if self._plc_thread is not None:
            self._plc_thread.join(2)

    def start_scanner(self, *, valid: int, part_id: int, scan_s: float = 0.005) -> ScanLog:
        """A PLC program's view: every `scan_s` it reads its own memory and latches the
        rising edges of result_valid with the part id under them (no Modbus in between,
        as a PLC reads its process image)."""
        log = ScanLog()

        def scan() -> None:
            last_valid, last_t = 0, time.monotonic()
            while not self._plc_stop.wait(scan_s):
                now = time.monotonic()
                log.max_gap_s = max(log.max_gap_s, now - last_t)
                last_t = now
                with self.lock:
                    v = self.coils.get(valid, 0)
                    words = (self.registers.get(part_id, 0), self.registers.get(part_id + 1, 0))
                if v and not last_valid:
                    log.edges.append((now, (words[0] << 16) | words[1]))
                last_valid = v

        self._plc_thread = threading.Thread(target=scan, name="plc-scan", daemon=True)
        self._plc_thread.start()
        return log

    def writes_to(self, table: str, address: int) -> list[tuple[float, list[int]]]:
        with self.lock:
            return [(t, v) for t, tb, a, v in self.writes if tb == table and a == address]


class ScanLog:
    """What a scanning PLC latched: (monotonic time, part id) per rising edge."""

    def __init__(self) -> None:
        self.edges: list[tuple[float, int]] = []
        self.max_gap_s = 0.0  # the longest time between two scans: the PLC's own lateness

    def ids(self) -> list[int]:
        return [part for _, part in self.edges]


# -- MQTT ------------------------------------------------------------------------------
def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )
    if found is None:
        pytest.skip("the mosquitto broker is not installed (Debian: apt-get install mosquitto)")
    return found


class Mosquitto:
    """A mosquitto broker on a free loopback port; `restart()` keeps the port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = mosquitto_binary()
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_until(self._accepts, timeout_s=5):
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")
        return self

    def _accepts(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Subscriber:
    """A paho client that records every message under `topic` (resubscribes on reconnect)."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{port}")
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.cond:
            self.messages.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))
            self.cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[tuple[str, dict[str, Any], bool]]], bool], timeout_s: float
    ) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.messages), timeout_s)

    def on(self, suffix: str) -> list[dict[str, Any]]:
        with self.cond:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
