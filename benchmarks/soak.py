"""Soak: the line for half an hour through cable pulls, PLC outages and broker restarts,
counted from outside.

The line runs as `edge-ad run` would (`run_line`): the simulated GenICam camera at
`--rate` parts/s, every frame a part, into JSON lines, a Modbus PLC (pulse handshake,
`lost_count` mapped) and MQTT. Around it, independent of the line's own counters:

- the PLC is its own process (pymodbus's server, as in the tests) with a 5 ms scan that
  latches each rising edge of result_valid with the part id, and logs the fault bit and
  lost_count; a PLC outage kills it (SIGKILL) and starts a new one, memory wiped;
- the MQTT subscriber is its own process (paho), logging every result it receives;
- mosquitto is restarted from here; a cable pull closes the camera's device under the
  source (so its next fetch fails, as after a real pull) and keeps the device taken for
  `--pull-s` seconds, so the camera stays away. Both go through the source's own
  `destroy_acquirer`: Harvesters' bare `destroy()` leaks native memory (see
  `edge_sdk/sources/genicam.py`), which a real pull would not make the harness add.

At the end it checks: every result in results.jsonl reached the PLC as one edge, or was
counted in lost_count (with the fault bit raised); no edge came later than max_age_s
after acquisition; what MQTT received against what it was sent; the process's RSS,
threads and file descriptors over the run. The model is the tests' brightness graph:
this measures signalling, not inference.

    python benchmarks/soak.py [--minutes 30] [--rate 10]

Writes benchmarks/results/soak.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
RESULTS = HERE / "results"
VALID, FAULT, ID, LOST = 3, 2, 0, 5
MAX_AGE_S = 2.0


# -- the PLC and the subscriber, each in a process of its own ---------------------------
def plc_process(port: int, log_path: Path) -> None:
    sys.path.insert(0, str(TESTS))
    from servers import ModbusPLC

    plc = ModbusPLC(size=64)
    plc.port = port
    plc.start()
    with log_path.open("a") as log:
        log.write(json.dumps({"event": "start", "t": time.time()}) + "\n")
        last_valid, last_fault, last_lost = 0, None, None
        while True:
            time.sleep(0.005)
            with plc.lock:
                valid, fault = plc.coils.get(VALID, 0), plc.coils.get(FAULT, 0)
                part = (plc.registers.get(ID, 0) << 16) | plc.registers.get(ID + 1, 0)
                bits = [plc.coils.get(i, 0) for i in range(3)]
                lost = plc.registers.get(LOST, 0)
            now = time.time()
            if valid and not last_valid:
                log.write(json.dumps({"event": "edge", "t": now, "id": part, "bits": bits}) + "\n")
            if fault != last_fault:
                log.write(json.dumps({"event": "fault", "t": now, "value": fault}) + "\n")
            if lost != last_lost:
                log.write(json.dumps({"event": "lost", "t": now, "value": lost}) + "\n")
            last_valid, last_fault, last_lost = valid, fault, lost
            log.flush()


def subscriber_process(port: int, log_path: Path) -> None:
    import paho.mqtt.client as mqtt

    log = log_path.open("a")

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.endswith("/result"):
            record = json.loads(msg.payload)
            log.write(json.dumps({"run_id": record["run_id"], "id": record["frame_id"]}) + "\n")
            log.flush()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-subscriber")
    client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("soak/#", qos=1)
    client.on_message = on_message
    while True:
        try:
            client.connect("127.0.0.1", port, keepalive=5)
            break
        except OSError:
            time.sleep(0.2)
    client.loop_forever(retry_first_connection=True)


def spawn(mode: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, mode, str(port), str(log_path)])


# -- the process's own resources ---------------------------------------------------------
def resources() -> dict[str, float]:
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    return {
        "t": time.monotonic(),
        "rss_mib": rss / 1024,
        "threads": len(os.listdir("/proc/self/task")),
        "fds": len(os.listdir("/proc/self/fd")),
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a PLC killed mid-line
            continue
    return out


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] in ("--plc", "--subscriber"):
        (plc_process if sys.argv[1] == "--plc" else subscriber_process)(
            int(sys.argv[2]), Path(sys.argv[3])
        )
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=10.0, help="parts per second")
    parser.add_argument("--pull-every-min", type=float, default=5.0)
    parser.add_argument("--pull-s", type=float, default=10.0, help="how long a pull lasts")
    parser.add_argument("--plc-outage-every-min", type=float, default=10.0)
    parser.add_argument("--plc-outage-s", type=float, default=15.0)
    parser.add_argument("--broker-restart-every-min", type=float, default=10.0)
    parser.add_argument("--broker-down-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()

    sys.path.insert(0, str(TESTS))
    from servers import Mosquitto, free_port
    from tiny_graphs import brightness_graph, write_tiny_bundle

    from edge_sdk.line.config import LineConfig
    from edge_sdk.line.pipeline import Pipeline
    from edge_sdk.line.service import run_line
    from edge_sdk.sources.genicam import GenICamSource, destroy_acquirer

    work = Path(tempfile.mkdtemp(prefix="edge-ad-soak-"))
    broker = Mosquitto(work).start()
    plc_port, plc_log, sub_log = free_port(), work / "plc.jsonl", work / "mqtt.jsonl"
    plc = spawn("--plc", plc_port, plc_log)
    subscriber = spawn("--subscriber", broker.port, sub_log)
    (work / "profile.yaml").write_text(
        f"pixel_format: Mono8\nwidth: 160\nheight: 120\nframe_rate_hz: {args.rate}\n"
    )
    config = LineConfig.model_validate(
        {
            "bundle": str(write_tiny_bundle(work / "tiny.bundle", brightness_graph())),
            "device": "cpu",
            "camera": "cam1",
            "cameras": {"cam1": "serial:1"},
            "profile": str(work / "profile.yaml"),
            "health": {"port": free_port()},
            "summary_every_s": 60,
            "sinks": [
                {"type": "jsonl", "path": str(work / "results.jsonl")},
                {
                    "type": "modbus",
                    "host": "127.0.0.1",
                    "port": plc_port,
                    "map": {"lost_count": LOST},
                },
                {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "topic_prefix": "soak"},
            ],
        }
    )
    started: list[Pipeline] = []
    stop = threading.Event()
    line = threading.Thread(
        target=run_line,
        args=(config,),
        kwargs={"stop": stop, "on_started": lambda p: started.append(p)},  # type: ignore[func-returns-value]
    )
    line.start()
    while not started:
        time.sleep(0.1)
    camera = started[0].source
    other = GenICamSource("0")  # keeps the Harvester from re-enumerating during a pull
    other.open()

    def minutes(every: float, offset: float) -> list[float]:
        out, t = [], offset
        while t < args.minutes * 60 - 30:
            out.append(t)
            t += every * 60
        return out

    events = sorted(
        [(t, "pull") for t in minutes(args.pull_every_min, args.pull_every_min * 60)]
        + [(t, "plc") for t in minutes(args.plc_outage_every_min, 15 * args.plc_outage_every_min)]
        + [
            (t, "broker")
            for t in minutes(args.broker_restart_every_min, 45 * args.broker_restart_every_min)
        ]
    )

    def undo(kind: str, handle: Any) -> subprocess.Popen[bytes] | None:
        """End one fault: the cable back, a new PLC (returned), the broker up."""
        if kind == "pull":
            destroy_acquirer(handle, camera._harvester)  # type: ignore[attr-defined]
        elif kind == "plc":
            return spawn("--plc", plc_port, plc_log)
        else:
            broker.start()
        return None

    log: list[dict[str, Any]] = []
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()
    pending: list[tuple[float, str, Any]] = []  # (when, what to undo, handle)
    try:
        while (now := time.monotonic() - t0) < args.minutes * 60:
            while events and events[0][0] <= now:
                _, kind = events.pop(0)
                log.append({"t_s": round(now, 1), "event": kind})
                print(f"{now / 60:6.2f} min: {kind}", flush=True)
                if kind == "pull":
                    with camera._lock:  # type: ignore[attr-defined]  # not mid-fetch
                        destroy_acquirer(camera._acquirer, None)  # type: ignore[attr-defined]
                    deadline = time.monotonic() + 5
                    while camera.connected and time.monotonic() < deadline:
                        time.sleep(0.01)
                    holder = camera._harvester.create({"serial_number": "1"})  # type: ignore[attr-defined]
                    pending.append((now + args.pull_s, "pull", holder))
                elif kind == "plc":
                    plc.send_signal(signal.SIGKILL)
                    plc.wait()
                    pending.append((now + args.plc_outage_s, "plc", None))
                else:
                    broker.stop()
                    pending.append((now + args.broker_down_s, "broker", None))
            for item in [p for p in pending if p[0] <= now]:
                pending.remove(item)
                plc = undo(item[1], item[2]) or plc
            if not samples or time.monotonic() - samples[-1]["t"] >= 10:
                samples.append(resources())
            time.sleep(0.05)
    finally:
        for _, kind, handle in pending:
            plc = undo(kind, handle) or plc
        time.sleep(3)  # let the last results through
        snapshot = started[0].snapshot().to_dict()
        stop.set()
        line.join(60)
        other.close()
        time.sleep(2)
        for proc in (plc, subscriber):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        broker.stop()

    report = analyse(work, snapshot, samples, log, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["checks"], indent=1))
    return 0 if all(c["ok"] for c in report["checks"].values()) else 1


def analyse(
    work: Path,
    snapshot: dict[str, Any],
    samples: list[dict[str, float]],
    events: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    results = read_jsonl(work / "results.jsonl")
    by_id = {r["frame_id"]: r for r in results}
    plc = read_jsonl(work / "plc.jsonl")
    edges = [e for e in plc if e["event"] == "edge"]
    edge_ids = [e["id"] for e in edges]
    lost = max((e["value"] for e in plc if e["event"] == "lost"), default=0)
    faults = sum(1 for e in plc if e["event"] == "fault" and e["value"] == 1)
    unsignalled = [i for i in by_id if i not in set(edge_ids)]
    ages = []
    for e in edges:
        record = by_id.get(e["id"])
        if record is not None:
            acquired = dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
            ages.append(e["t"] - acquired.timestamp())
    mqtt = read_jsonl(work / "mqtt.jsonl")
    received = [m["id"] for m in mqtt]
    sinks = snapshot["sinks"]
    steady = [s for s in samples if s["t"] - samples[0]["t"] >= 300] or samples
    half = max(1, len(steady) // 4)

    def drift(key: str) -> float:
        first = statistics.median(s[key] for s in steady[:half])
        last = statistics.median(s[key] for s in steady[-half:])
        return round(last / first - 1, 4)

    checks = {
        "every_part_signalled_or_counted_lost": {
            "results": len(results),
            "plc_edges": len(edges),
            "distinct_parts_at_plc": len(set(edge_ids)),
            "lost_count_at_plc": lost,
            "not_signalled": len(unsignalled),
            # A PLC that dies between the strobe and its reset has seen the part, yet the
            # handshake failed: it is counted lost too (at least once, never silently).
            "signalled_and_counted_lost": lost - len(unsignalled),
            "ok": len(unsignalled) <= lost and len(results) > 0,
        },
        "fault_raised_when_parts_were_lost": {
            "fault_rises": faults,
            "ok": lost == 0 or faults > 0,
        },
        "no_verdict_older_than_max_age": {
            "max_age_s": MAX_AGE_S,
            "oldest_edge_s": round(max(ages), 3) if ages else None,
            "p99_edge_s": round(sorted(ages)[int(0.99 * (len(ages) - 1))], 3) if ages else None,
            "ok": bool(ages) and max(ages) <= MAX_AGE_S + 0.05,  # + one PLC scan and jitter
        },
        "mqtt": {
            "sent": sinks["mqtt"]["delivered"],
            "not_delivered": sinks["mqtt"]["dropped"],
            "received_distinct": len(set(received)),
            "duplicates": len(received) - len(set(received)),
            "missing": len(set(by_id) - set(received)),
            "ok": len(set(by_id) - set(received)) == sinks["mqtt"]["dropped"],
        },
        "resources_flat": {
            "rss_drift": drift("rss_mib"),
            "threads_drift": drift("threads"),
            "fds_drift": drift("fds"),
            "ok": all(abs(drift(k)) <= 0.05 for k in ("rss_mib", "threads", "fds")),
        },
    }
    return {
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "minutes": args.minutes,
        "rate_hz": args.rate,
        "load_average_end": os.getloadavg(),
        "events": events,
        "checks": checks,
        "line": {
            "frames": snapshot["frames"],
            "results": snapshot["results"],
            "verdicts": snapshot["verdicts"],
            "source": snapshot["source"],
            "sinks": sinks,
        },
        "resources": samples,
        "workdir": str(work),
    }


if __name__ == "__main__":
    raise SystemExit(main())
