"""Sink configuration, the factory, the JSON-lines and callback sinks, the public surface."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from servers import inspection

from edge_sdk.errors import ConfigError
from edge_sdk.records import Verdict
from edge_sdk.sinks import (
    CallbackSink,
    JsonlSink,
    SinkRunner,
    build_runner,
    build_sink,
    parse_sink_configs,
)

LINE_YAML = """
sinks:
  - type: jsonl
    path: out/results.jsonl
    rotate_bytes: 1KiB
    keep_files: 2
  - type: modbus
    host: 192.168.10.20
    map: {ok: 0, nok: 1, fault: 2, result_valid: 3, ack: 4, part_id: 0, heartbeat: 2}
    delivery: {queue_size: 32, retry_deadline_s: 2}
  - type: mqtt
    host: broker.local
  - type: archive
    root: /var/lib/edge-ad/archive
    ok_every: 100
    max_bytes: 20GiB
    min_free_bytes: 5GiB
  - type: callback
    name: mes
    target: custom_sink:RejectTally
    options: {report_every_s: 30}
"""
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_a_line_config_parses() -> None:
    configs = parse_sink_configs(yaml.safe_load(LINE_YAML)["sinks"])
    assert [c.type for c in configs] == ["jsonl", "modbus", "mqtt", "archive", "callback"]
    modbus = configs[1]
    assert modbus.map.ack == 4 and modbus.delivery.queue_size == 32  # type: ignore[union-attr]
    assert configs[3].max_bytes == 20 * 2**30  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "jsonl", "pathh": "x"}, "sinks[0].jsonl.pathh: Extra inputs are not permitted"),
        ({"type": "mqtt"}, "sinks[0].mqtt.host: Field required"),
        ({"type": "modbus", "host": "plc", "port": 0}, "sinks[0].modbus.port: Input should be"),
        ({"type": "modbus", "host": "p", "map": {"nok": 0}}, "map.nok and map.ok both use coil 0"),
        ({"type": "plc"}, "does not match any of the expected tags: 'jsonl', 'modbus'"),
        ({"type": "archive", "root": "/a", "max_bytes": "lots"}, "archive.max_bytes: could not"),
        ({"type": "mqtt", "host": "h", "camera": "a+b"}, "camera 'a+b' is not a usable MQTT"),
        ({"type": "jsonl", "delivery": {"queue_size": 0}}, "delivery.queue_size: Input should"),
    ],
)
def test_config_errors_name_the_key(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_sink_configs([entry])
    assert message in str(info.value)


def test_sink_names_must_be_unique() -> None:
    with pytest.raises(ConfigError, match=r"sinks\[1\]: a second sink named 'jsonl'"):
        parse_sink_configs([{"type": "jsonl"}, {"type": "jsonl", "path": "/tmp/x"}])


def test_relative_paths_resolve_against_the_config_folder_only(tmp_path: Path) -> None:
    [config] = parse_sink_configs([{"type": "jsonl", "path": "out/r.jsonl"}])
    with pytest.raises(ConfigError, match=r"relative path 'out/r\.jsonl' needs the line config"):
        build_sink(config)
    sink = build_sink(config, base_dir=tmp_path)
    assert isinstance(sink, JsonlSink) and sink.path == tmp_path / "out" / "r.jsonl"


def test_jsonl_writes_one_flushed_line_per_result_and_rotates(tmp_path: Path) -> None:
    [config] = parse_sink_configs(yaml.safe_load(LINE_YAML)["sinks"][:1])
    runner = build_runner(config, base_dir=tmp_path)
    path = tmp_path / "out" / "results.jsonl"
    runner.submit(inspection(0, Verdict.NOK, part_id="P-1"))
    runner.close(timeout_s=2)
    line = json.loads(path.read_text())  # flushed: readable while the sink is open
    assert line["verdict"] == "NOK" and line["part_id"] == "P-1" and line["camera"] == "cam0"

    sink = build_sink(config, base_dir=tmp_path)
    for i in range(1, 40):
        sink(inspection(i, Verdict.ERROR if i % 7 == 0 else Verdict.OK, size=(2, 2)))
    sink.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["results.jsonl", "results.jsonl.1", "results.jsonl.2"]  # keep_files: 2
    for p in path.parent.iterdir():
        assert p.stat().st_size <= 1024
        assert all(json.loads(x) for x in p.read_text().splitlines())  # never a cut line
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["frame_id"] == 39 and last["latency"]["total_ms"] == 0.0


_FULL_DISK = """
import json, resource, signal, sys
import numpy as np
from edge_sdk.records import Frame, Result, Verdict
from edge_sdk.records import Inspection
from edge_sdk.sinks.errors import SinkError
from edge_sdk.sinks.jsonl import JsonlSink

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
sink, written = JsonlSink(sys.argv[1]), 0

def write(i):
    global written
    frame = Frame(np.zeros((2, 2), np.uint8), i, 0, camera_id="cam0", part_id="x" * (i % 7))
    try:
        sink(Inspection(frame, Result(i, Verdict.NOK, 0.7, 0.5), pixel_threshold=0.1))
        written += 1
    except SinkError:
        pass

hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # the disk fills at 1000 bytes
for i in range(20):
    write(i)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # and is freed again
for i in range(20, 25):
    write(i)
print(written)
"""


def test_jsonl_writes_whole_records_when_the_disk_fills(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"cut off by a crash":')  # the last run died mid-record
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = path.read_text().splitlines()
    assert lines[0] == '{"cut off by a crash":'  # kept, and the next record not glued on
    records = [json.loads(line) for line in lines[1:]]  # every other line is whole
    assert len(records) == int(done.stdout) and 5 < len(records) < 25
    assert [r["frame_id"] for r in records][-5:] == list(range(20, 25))


def test_callback_targets_load_by_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    [config] = parse_sink_configs(yaml.safe_load(LINE_YAML)["sinks"][-1:])
    sink = build_sink(config)
    assert isinstance(sink, CallbackSink) and sink.name == "mes"
    assert sink.tick_interval_s == 30  # the class's own tick travels with it
    with SinkRunner(sink) as runner:
        runner.submit(inspection(1, Verdict.NOK))
        runner.submit(inspection(2))
    assert runner.health().delivered == 2
    with pytest.raises(ConfigError, match="has no 'nope'"):
        build_sink(*parse_sink_configs([{"type": "callback", "target": "json:nope"}]))
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        build_sink(*parse_sink_configs([{"type": "callback", "target": "no_such_module:f"}]))


def test_importing_sinks_stays_light() -> None:
    code = (
        "import sys, edge_sdk.sinks; "
        "print(sorted(m for m in ('cv2', 'pymodbus', 'paho', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_surface() -> None:
    import edge_sdk.sinks as sinks

    assert sinks.__all__ == sorted(sinks.__all__)
    for name in sinks.__all__:
        assert getattr(sinks, name) is not None


def test_custom_sink_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_sink.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "'delivered': 20" in out.stdout and "final tally" in out.stderr
