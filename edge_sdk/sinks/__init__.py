"""Where results go: signals to the line, archives, callbacks. Each sink runs behind its
own queue and thread (`SinkRunner`), so a slow or dead one never stalls inspection.

    configs = parse_sink_configs(line_config["sinks"])
    runners = [build_runner(c, base_dir=config_dir, camera="cam0") for c in configs]
    for runner in runners:
        runner.submit(inspection)      # never blocks
    runner.health()                    # SinkHealth: delivered, dropped, state, ...
    runner.close(timeout_s=5)          # drains what it can in time, never hangs

A sink is any callable with `name` and `close()` (`Sink`); it may raise to fail a
delivery. The sink classes that need optional packages (pymodbus, paho-mqtt) or OpenCV
load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge_sdk.records import Inspection
from edge_sdk.sinks.base import Sink
from edge_sdk.sinks.callback import CallbackSink
from edge_sdk.sinks.config import (
    ArchiveSinkConfig,
    CallbackSinkConfig,
    DeliveryConfig,
    JsonlSinkConfig,
    ModbusMap,
    ModbusSinkConfig,
    MqttSinkConfig,
    SinkConfig,
    parse_sink_configs,
)
from edge_sdk.sinks.errors import PermanentSinkError, SinkError
from edge_sdk.sinks.factory import build_runner, build_sink
from edge_sdk.sinks.jsonl import JsonlSink
from edge_sdk.sinks.metrics import prometheus_text
from edge_sdk.sinks.runner import SinkHealth, SinkRunner

if TYPE_CHECKING:
    from edge_sdk.sinks.archive import ArchiveSink
    from edge_sdk.sinks.modbus import ModbusSink
    from edge_sdk.sinks.mqtt import MqttSink

_LAZY = {
    "ArchiveSink": "edge_sdk.sinks.archive",
    "ModbusSink": "edge_sdk.sinks.modbus",
    "MqttSink": "edge_sdk.sinks.mqtt",
}

__all__ = [
    "ArchiveSink",
    "ArchiveSinkConfig",
    "CallbackSink",
    "CallbackSinkConfig",
    "DeliveryConfig",
    "Inspection",
    "JsonlSink",
    "JsonlSinkConfig",
    "ModbusMap",
    "ModbusSink",
    "ModbusSinkConfig",
    "MqttSink",
    "MqttSinkConfig",
    "PermanentSinkError",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkHealth",
    "SinkRunner",
    "build_runner",
    "build_sink",
    "parse_sink_configs",
    "prometheus_text",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_sdk.sinks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
