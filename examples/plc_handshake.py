"""The Modbus TCP handshake with a PLC, end to end.

    pip install 'edge-ad[signals]'
    python examples/plc_handshake.py                  # against a local stand-in PLC
    python examples/plc_handshake.py --host 10.0.0.5  # against your PLC (it must serve
                                                      # the register map below)

The line integrator's side is the YAML block: where the signals live in the PLC. The
stand-in PLC is pymodbus's own server, and its "program" (`plc_scan`) is written the
way ladder or structured text would do it: poll result_valid, on its rising edge read
the id and the bits, set ack; when result_valid falls, clear ack.

See `edge_sdk.sinks.modbus` for the full register map and timing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time

import numpy as np
import yaml

from edge_sdk.records import Frame, Result, Verdict
from edge_sdk.sinks import Inspection, build_runner, parse_sink_configs

LINE_CONFIG = """
sinks:
  - type: modbus
    name: plc
    host: 127.0.0.1
    port: 5020
    unit_id: 1
    bits: coils                # ok/nok/fault/result_valid/ack are coils
    map:
      ok: 0
      nok: 1
      fault: 2                 # ERROR verdicts, or the service unhealthy
      result_valid: 3          # the strobe
      ack: 4                   # set by the PLC; remove it to use a timed pulse instead
      part_id: 0               # holding registers 0-1: the echoed frame id, high word first
      part_id_words: 2
      heartbeat: 2             # holding register 2: +1 every heartbeat_interval_s
    echo: frame_id
    timeout_s: 0.3
    ack_timeout_s: 1.0
    heartbeat_interval_s: 0.5
    delivery: {queue_size: 64, retry_deadline_s: 3}
"""

OK, NOK, FAULT, VALID, ACK = 0, 1, 2, 3, 4


def start_stand_in_plc(port: int) -> threading.Event:
    """pymodbus's server with 32 coils and 32 holding registers, on a thread."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def block(kind: DataType) -> list[SimData]:
        return [SimData(0, count=32, values=0, datatype=kind)]

    device = SimDevice(
        1,
        simdata=(
            block(DataType.BITS),
            block(DataType.BITS),
            block(DataType.REGISTERS),
            block(DataType.REGISTERS),
        ),
    )
    ready = threading.Event()

    async def serve() -> None:
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        ready.set()
        await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    ready.wait(5)
    time.sleep(0.2)
    return ready


def plc_scan(host: str, port: int, stop: threading.Event) -> None:
    """What the PLC program does each scan cycle (here: every 5 ms, over Modbus)."""
    from pymodbus.client import ModbusTcpClient

    plc = ModbusTcpClient(host, port=port, timeout=0.5)
    plc.connect()
    last_valid, last_beat = False, None
    while not stop.wait(0.005):
        coils = plc.read_coils(0, count=5, device_id=1).bits
        words = plc.read_holding_registers(0, count=3, device_id=1).registers
        valid = coils[VALID]
        if valid and not last_valid:  # rising edge: the result is complete
            part = (words[0] << 16) | words[1]
            verdict = "FAULT" if coils[FAULT] else "NOK" if coils[NOK] else "OK"
            print(f"PLC: part {part}: {verdict} -> {'eject' if coils[NOK] else 'pass'}")
            plc.write_coil(ACK, True, device_id=1)
        elif not valid and last_valid:
            plc.write_coil(ACK, False, device_id=1)
        if words[2] != last_beat:
            last_beat = words[2]  # a real PLC resets its watchdog timer here
        last_valid = valid
    plc.close()


def inspection(frame_id: int, verdict: Verdict) -> Inspection:
    frame = Frame(np.zeros((8, 8), np.uint8), frame_id, time.time_ns(), camera_id="cam0")
    error = "model failed" if verdict is Verdict.ERROR else None
    return Inspection(frame, Result(frame_id, verdict, 0.3, 0.5, error=error), 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="a real PLC; without it a local stand-in is started")
    parser.add_argument("--port", type=int, default=5020)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    entry = yaml.safe_load(LINE_CONFIG)["sinks"][0]
    entry.update(port=args.port, host=args.host or "127.0.0.1")
    [config] = parse_sink_configs([entry])

    stop = threading.Event()
    if args.host is None:
        start_stand_in_plc(args.port)
        threading.Thread(target=plc_scan, args=("127.0.0.1", args.port, stop), daemon=True).start()

    runner = build_runner(config)
    for frame_id, verdict in enumerate([Verdict.OK, Verdict.NOK, Verdict.OK, Verdict.ERROR], 1):
        runner.submit(inspection(frame_id, verdict))
    time.sleep(1.5)  # a few heartbeats
    runner.close(timeout_s=3)
    stop.set()
    print("sink health:", runner.health().to_dict())


if __name__ == "__main__":
    main()
