"""Build sinks and their runners from configuration (`edge_sdk.sinks.config`).

>>> from edge_sdk.sinks.config import parse_sink_configs
>>> [config] = parse_sink_configs([{"type": "callback", "target": "builtins:print"}])
>>> build_sink(config).name
'callback'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge_sdk.errors import ConfigError
from edge_sdk.sinks.base import Sink
from edge_sdk.sinks.config import (
    ArchiveSinkConfig,
    CallbackSinkConfig,
    CameraLineSinkConfig,
    JsonlSinkConfig,
    ModbusSinkConfig,
    MqttSinkConfig,
    SinkConfig,
)
from edge_sdk.sinks.runner import SinkRunner

__all__ = ["build_runner", "build_sink"]


def build_sink(
    config: SinkConfig,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    camera: str | None = None,
    source: Any = None,
) -> Sink:
    """The sink a config describes. Imports its optional dependency only now.

    Relative paths are resolved against `base_dir` (the folder of the line config file),
    never against the working directory; without `base_dir` they are refused. `camera`
    is the line's camera id, used where the config does not name one (MQTT topics).
    """
    name = config.name or config.type
    if isinstance(config, JsonlSinkConfig):
        from edge_sdk.sinks.jsonl import JsonlSink

        path = None if config.path in (None, Path("-")) else _resolve(config.path, base_dir, name)
        return JsonlSink(
            path,
            rotate_bytes=int(config.rotate_bytes) if config.rotate_bytes else None,
            keep_files=config.keep_files,
            name=name,
        )
    if isinstance(config, ModbusSinkConfig):
        from edge_sdk.sinks.modbus import ModbusSink

        return ModbusSink(config, name=name)
    if isinstance(config, MqttSinkConfig):
        from edge_sdk.sinks.mqtt import MqttSink

        if config.tls_ca_file is not None:
            ca_file = _resolve(config.tls_ca_file, base_dir, name)
            config = config.model_copy(update={"tls_ca_file": ca_file})
        return MqttSink(config, camera=camera, name=name)
    if isinstance(config, ArchiveSinkConfig):
        from edge_sdk.sinks.archive import ArchiveSink

        root = _resolve(config.root, base_dir, name)
        return ArchiveSink(config.model_copy(update={"root": root}), name=name)
    if isinstance(config, CallbackSinkConfig):
        from edge_sdk.sinks.callback import CallbackSink, load_callable

        return CallbackSink(load_callable(config.target, config.options), name=name)
    if isinstance(config, CameraLineSinkConfig):
        from edge_sdk.sinks.camera_line import CameraLineSink

        if source is None or not hasattr(type(source), "node_map"):
            raise ConfigError(
                f"sink {name!r}: a camera_line sink needs the line's GenICam camera as its "
                f"source, found {type(source).__name__}"
            )
        return CameraLineSink(source, config, name=name)
    raise ConfigError(f"unknown sink config {type(config).__name__}")


def build_runner(
    config: SinkConfig,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    camera: str | None = None,
    source: Any = None,
) -> SinkRunner:
    """`build_sink` behind a `SinkRunner` with the config's `delivery` settings."""
    return SinkRunner(
        build_sink(config, base_dir=base_dir, camera=camera, source=source),
        delivery=config.delivery,
    )


def _resolve(path: Path, base_dir: str | os.PathLike[str] | None, name: str) -> Path:
    path = path.expanduser()
    if path.is_absolute():
        return path
    if base_dir is None:
        raise ConfigError(
            f"sink {name!r}: relative path {str(path)!r} needs the line config's folder "
            "(base_dir) to resolve against; give an absolute path"
        )
    return Path(base_dir) / path
