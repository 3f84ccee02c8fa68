"""The line configuration (`line.yaml`): one validated model, with an explicit precedence

    command line  >  environment (EDGE_AD_*)  >  config file  >  defaults

Environment variables name a key in upper case, nested keys joined by a double
underscore: EDGE_AD_DEADLINE_MS=500, EDGE_AD_HEALTH__PORT=9100. A value that starts with
'[' or '{' is read as JSON (for lists such as sinks). Relative paths in the file are
relative to the file's folder (systemd starts services in /); relative paths given on the
command line or in the environment are relative to the working directory.

Example:

    camera: cam0                       # an alias below, a serial, a user name or an index
    cameras: {cam0: "0"}
    profile: ../calibration/viky-mono8.yaml
    bundle: screw.bundle
    device: auto                       # auto | cpu | openvino | cuda | tensorrt
    mode: per_part                     # per_part | free_run
    deadline_ms: 500
    sinks:
      - {type: jsonl, path: results.jsonl}
    health: {port: 8787}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge_sdk.errors import ConfigError
from edge_sdk.runtime.engine import Device
from edge_sdk.sinks.config import SinkConfig, parse_sink_configs

log = logging.getLogger(__name__)

ENV_PREFIX = "EDGE_AD_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FolderConfig(_Strict):
    path: Path
    rate_hz: float | None = Field(None, gt=0)
    loop: bool = False


class VideoConfig(_Strict):
    uri: str  # a file, a device index ("0") or an RTSP URL
    rate_hz: float | None = Field(None, gt=0)


class HealthConfig(_Strict):
    enabled: bool = True
    # Localhost only by default: the endpoint has no authentication.
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)


class LineConfig(_Strict):
    source: Literal["genicam", "folder", "video"] = "genicam"
    camera: str = "0"
    cameras: dict[str, str] = Field(default_factory=dict)
    producers: list[Path] = Field(default_factory=list)
    profile: Path | None = None
    include_simulator: bool = True
    folder: FolderConfig | None = None
    video: VideoConfig | None = None
    bundle: Path
    device: Device = "auto"
    variant: str | None = None
    threads: int = Field(0, ge=0)
    # TensorRT: where built engines are kept between starts (the unit sets
    # EDGE_AD_TRT_CACHE_DIR to its CacheDirectory); none: rebuilt on every start.
    trt_cache_dir: Path | None = None
    # CUDA graphs; unset: on for the CUDA provider, off for TensorRT (see EngineOptions).
    cuda_graph: bool | None = None
    # An int8/fp16 variant's near-threshold parts re-decided by the float32 graph (see
    # edge_sdk.runtime.inspector.RECHECK_FACTOR); false: the variant decides every part alone.
    recheck: bool = True
    mode: Literal["per_part", "free_run"] = "per_part"
    deadline_ms: float = Field(1000.0, gt=0)
    queue_size: int = Field(64, ge=1)
    drain_timeout_s: float = Field(5.0, ge=0)
    # Typed sink models (edge_sdk.sinks.config), validated once, here.
    sinks: list[SinkConfig] = Field(default_factory=lambda: parse_sink_configs([{"type": "jsonl"}]))
    health: HealthConfig = HealthConfig()
    summary_every_s: float = Field(10.0, gt=0)
    # No frame and no acquisition tick for this long: unhealthy (PLC heartbeat stops).
    stall_after_s: float = Field(5.0, gt=0)

    @field_validator("sinks", mode="before")
    @classmethod
    def _parse_sinks(cls, value: Any) -> Any:
        # parse_sink_configs names the entry (sinks[1].map.ok) and refuses duplicate names;
        # load_config calls it first, with the layer the sinks came from.
        if isinstance(value, list):
            try:
                return parse_sink_configs(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


_PATH_KEYS = ("bundle", "profile", "trt_cache_dir")
# What to do about a setting that is missing, for the settings a newcomer meets first.
_HINTS = {
    "bundle": ": pass --bundle B.bundle, or set `bundle:` in --config line.yaml "
    "(EDGE_AD_BUNDLE in the environment); `edge-ad run --demo` needs none",
}
_SINK_PATH_KEYS = ("path", "directory", "root", "tls_ca_file")


def _absolute(value: Any, base: Path) -> Any:
    if value is None or value == "":
        return value
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(data)
    for key in _PATH_KEYS:
        if key in out:
            out[key] = _absolute(out[key], base)
    if "producers" in out and isinstance(out["producers"], list):
        out["producers"] = [_absolute(p, base) for p in out["producers"]]
    for key, field_name in (("folder", "path"), ("video", "uri")):
        section = out.get(key)
        if isinstance(section, dict) and field_name in section:
            if key == "video" and not Path(str(section[field_name])).suffix:
                continue  # a device index or URL, not a file
            section = dict(section)
            section[field_name] = _absolute(section[field_name], base)
            out[key] = section
    if isinstance(out.get("sinks"), list):
        # Sinks name files too: the JSON lines path, the archive root, a CA file.
        out["sinks"] = [
            {
                k: (_absolute(v, base) if k in _SINK_PATH_KEYS and v != "-" else v)
                for k, v in sink.items()
            }
            if isinstance(sink, dict)
            else sink
            for sink in out["sinks"]
        ]
    return out


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """EDGE_AD_* variables as a nested mapping (strings; pydantic converts types)."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "EDGE_AD_DATA":
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        value: Any = raw
        if raw.strip().startswith(("[", "{")):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment variable {name}: not valid JSON: {exc}") from exc
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[LineConfig, dict[str, str]]:
    """The line config from defaults, `path`, the environment and `overrides` (the command
    line), in rising precedence. Also returns where each top-level key came from."""
    cwd = Path.cwd()
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        file = Path(path).expanduser().absolute()
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read the line config: {exc}") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: expected a mapping of settings, got {type(data).__name__}")
        layers.append((str(file), _resolve_paths(data, file.parent)))
    env = from_environment(os.environ if environ is None else environ)
    if env:
        layers.append(("environment", _resolve_paths(env, cwd)))
    if overrides:
        cli = {k: v for k, v in overrides.items() if v is not None}
        layers.append(("command line", _resolve_paths(cli, cwd)))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, layer in layers:
        merged = _deep_merge(merged, layer)
        origin.update(dict.fromkeys(layer, name))
    if isinstance(merged.get("sinks"), list):
        source = f"sinks (from {origin.get('sinks', 'defaults')})"
        merged["sinks"] = parse_sink_configs(merged["sinks"], source=source)
    try:
        config = LineConfig.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            source = origin.get(str(err["loc"][0]), "defaults") if err["loc"] else "?"
            hint = _HINTS.get(where, "") if err["type"] == "missing" else ""
            lines.append(f"  {where} (from {source}): {err['msg']}{hint}")
        raise ConfigError("invalid line configuration:\n" + "\n".join(lines)) from None
    return config, origin


def describe(config: LineConfig) -> str:
    """The resolved config as YAML, for the log at start."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
