"""The line configuration (`line.yaml`): one validated model, with an explicit precedence

    command line  >  environment (EDGE_AD_*)  >  config file  >  defaults

Environment variables name a key in upper case, nested keys joined by a double
underscore: EDGE_AD_PIPELINE__DEADLINE_MS=500, EDGE_AD_HEALTH__PORT=9100. A value that
starts with '[' or '{' is read as JSON (for lists such as sinks). Relative paths in the
file are relative to the file's folder (systemd starts services in /); relative paths
given on the command line or in the environment are relative to the working directory.

The `engine` and `pipeline` sections are the options the Inspector and the Pipeline take
(:class:`~edge_sdk.runtime.engine.EngineOptions`,
:class:`~edge_sdk.line.options.PipelineOptions`), validated here. Their keys may also
stand at the top level, as line.yaml had them before the sections (`deadline_ms: 500`,
EDGE_AD_DEVICE=cpu): each layer's flat keys move into their section before the layers
merge, so both forms keep their precedence; one layer giving both forms of a key is an
error.

Example:

    camera: cam0                       # an alias below, a serial, a user name or an index
    cameras: {cam0: "0"}
    profile: ../calibration/viky-mono8.yaml
    bundle: screw.bundle
    engine: {device: auto}             # auto | cpu | openvino | cuda | tensorrt
    pipeline: {mode: per_part, deadline_ms: 500}   # per_part | free_run
    sinks:
      - {type: jsonl, path: results.jsonl}
    health: {port: 8787}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_sdk.errors import ConfigError
from edge_sdk.line.options import PipelineOptions
from edge_sdk.runtime.engine import EngineOptions
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
    # How the graph runs: device, variant, threads, the TensorRT engine cache (the unit
    # sets EDGE_AD_TRT_CACHE_DIR to its CacheDirectory), CUDA graphs.
    engine: EngineOptions = EngineOptions()
    # An int8/fp16 variant's near-threshold parts re-decided by the float32 graph (see
    # edge_sdk.runtime.inspector.RECHECK_FACTOR); false: the variant decides every part alone.
    recheck: bool = True
    # Mode, deadline, queue and drain times of the pipeline.
    pipeline: PipelineOptions = PipelineOptions()
    # Typed sink models (edge_sdk.sinks.config), validated once, here.
    sinks: list[SinkConfig] = Field(default_factory=lambda: parse_sink_configs([{"type": "jsonl"}]))
    health: HealthConfig = HealthConfig()
    summary_every_s: float = Field(10.0, gt=0)
    # No frame and no acquisition tick for this long: unhealthy (PLC heartbeat stops).
    stall_after_s: float = Field(5.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_keys(cls, value: Any) -> Any:
        # LineConfig(device="cpu") from Python, as load_config does for each layer.
        if isinstance(value, dict):
            try:
                return nest_flat_keys(value, "the line configuration")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

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


# The keys of the engine and pipeline sections that line.yaml had at the top level
# before the sections, and their section.
FLAT_KEYS = {
    **{f.name: "engine" for f in dataclasses.fields(EngineOptions)},
    **{f.name: "pipeline" for f in dataclasses.fields(PipelineOptions)},
}


def nest_flat_keys(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`data` with its top-level engine and pipeline keys moved into their sections.

    >>> nest_flat_keys({"deadline_ms": 300, "engine": {"device": "cpu"}}, "x")
    {'engine': {'device': 'cpu'}, 'pipeline': {'deadline_ms': 300}}
    """
    out = dict(data)
    for key, section in FLAT_KEYS.items():
        if key not in out:
            continue
        value = out.pop(key)
        nested = out.get(section)
        nested = dict(nested) if isinstance(nested, Mapping) else {}
        if key in nested:
            raise ConfigError(
                f"{where}: {key} is given twice, at the top level and as {section}.{key}; "
                f"keep the {section}.{key} one"
            )
        nested[key] = value
        out[section] = nested
    return out


_PATH_KEYS = ("bundle", "profile")
# Paths inside sections; a video uri is a path only when it names a file.
_SECTION_PATH_KEYS = (("engine", "trt_cache_dir"), ("folder", "path"), ("video", "uri"))
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
    """The one place where a layer's relative paths become absolute (``data`` nested)."""
    out = dict(data)
    for key in _PATH_KEYS:
        if key in out:
            out[key] = _absolute(out[key], base)
    if "producers" in out and isinstance(out["producers"], list):
        out["producers"] = [_absolute(p, base) for p in out["producers"]]
    for key, field_name in _SECTION_PATH_KEYS:
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


def _drop_unset(data: Mapping[str, Any]) -> dict[str, Any]:
    """The command line's values that were given (None: not given), at any depth."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            value = _drop_unset(value)
            if not value:
                continue
        if value is not None:
            out[key] = value
    return out


def _origins(layer: Mapping[str, Any], name: str) -> dict[str, str]:
    """Where each key of a layer came from: top-level keys and `section.key`."""
    out = dict.fromkeys(layer, name)
    for key, value in layer.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{inner}": name for inner in value})
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
    line), in rising precedence. Also returns where each key came from (top-level keys,
    and `section.key` for the keys of a section)."""
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
        layers.append((str(file), _resolve_paths(nest_flat_keys(data, str(file)), file.parent)))
    env = from_environment(os.environ if environ is None else environ)
    if env:
        layers.append(("environment", _resolve_paths(nest_flat_keys(env, "environment"), cwd)))
    if overrides:
        cli = nest_flat_keys(_drop_unset(overrides), "command line")
        layers.append(("command line", _resolve_paths(cli, cwd)))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, layer in layers:
        merged = _deep_merge(merged, layer)
        origin.update(_origins(layer, name))
    if isinstance(merged.get("sinks"), list):
        source = f"sinks (from {origin.get('sinks', 'defaults')})"
        merged["sinks"] = parse_sink_configs(merged["sinks"], source=source)
    try:
        config = LineConfig.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            loc = [str(p) for p in err["loc"]]
            source = origin.get(".".join(loc[:2])) or origin.get(loc[0], "defaults") if loc else "?"
            hint = _HINTS.get(where, "") if err["type"] == "missing" else ""
            lines.append(f"  {where} (from {source}): {err['msg']}{hint}")
        raise ConfigError("invalid line configuration:\n" + "\n".join(lines)) from None
    return config, origin


def describe(config: LineConfig) -> str:
    """The resolved config as YAML, for the log at start."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
