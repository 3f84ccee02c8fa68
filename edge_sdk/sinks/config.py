"""Sink configuration: one pydantic model per sink type, chosen by its `type` key.

In a line config the sinks are a list; every entry may carry a `delivery` block for its
runner (queue size, retries)::

    sinks:
      - type: jsonl
        path: results.jsonl          # relative to the line config file; omit for stdout
        rotate_bytes: 50MiB
      - type: modbus
        host: 192.168.10.20
        map: {ok: 0, nok: 1, fault: 2, result_valid: 3, part_id: 0, heartbeat: 2}
        delivery: {queue_size: 256, retry_deadline_s: 5}
      - type: mqtt
        host: broker.local
        topic_prefix: edge-ad
      - type: archive
        root: /var/lib/edge-ad/archive
        ok_every: 100
        max_bytes: 20GiB
        min_free_bytes: 5GiB
      - type: callback
        target: my_line.signals:notify_mes

Parsing does not import pymodbus or paho; building the sink does (`edge_sdk.sinks.build_sink`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from edge_sdk.errors import ConfigError

__all__ = [
    "AnySinkConfig",
    "ArchiveSinkConfig",
    "CallbackSinkConfig",
    "DeliveryConfig",
    "JsonlSinkConfig",
    "ModbusMap",
    "ModbusSinkConfig",
    "MqttSinkConfig",
    "SinkConfig",
    "parse_sink_configs",
]

_TOPIC_SEGMENT = re.compile(r"^[^/+#\x00]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeliveryConfig(_Strict):
    """How a `SinkRunner` queues and retries for one sink."""

    queue_size: int = Field(256, ge=1, description="inspections that may wait for the sink")
    retry_deadline_s: float = Field(
        10.0, ge=0.0, description="give up on an inspection this long after its first attempt"
    )
    max_age_s: float | None = Field(
        None,
        gt=0.0,
        description=(
            "never deliver a result older than this, counted from the frame's acquisition: "
            "it is dropped, counted as expired and raises the sink's fault signal; "
            "None: no limit (the default of the record sinks; signalling sinks set one)"
        ),
    )
    backoff_initial_s: float = Field(0.05, gt=0.0)
    backoff_max_s: float = Field(2.0, gt=0.0)
    down_after_failures: int = Field(
        3, ge=1, description="consecutive failed attempts after which health says 'down'"
    )
    degraded_window_s: float = Field(
        60.0, ge=0.0, description="health stays 'degraded' this long after a drop"
    )
    log_interval_s: float = Field(
        10.0, ge=0.0, description="at most one failure log line per kind per interval"
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> DeliveryConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_initial_s "
                f"({self.backoff_initial_s})"
            )
        return self


class _SinkBase(_Strict):
    name: str | None = Field(None, description="defaults to the type; must be unique")
    delivery: DeliveryConfig = DeliveryConfig()

    # The sink type's own defaults for its `delivery` block, under what the config sets.
    # A signalling sink's result is useless once the part has moved on (a PLC that tracks
    # parts by position would act on the wrong one): those set a max_age_s.
    delivery_defaults: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _type_delivery_defaults(cls, data: Any) -> Any:
        if not cls.delivery_defaults or not isinstance(data, dict):
            return data
        delivery = data.get("delivery", {})
        if isinstance(delivery, DeliveryConfig):
            unset = {
                k: v for k, v in cls.delivery_defaults.items() if k not in delivery.model_fields_set
            }
            delivery = delivery.model_copy(update=unset)
        elif isinstance(delivery, dict):
            delivery = {**cls.delivery_defaults, **delivery}
        return {**data, "delivery": delivery}


class JsonlSinkConfig(_SinkBase):
    """Every result as one JSON line, to a file (flushed per line) or to stdout."""

    type: Literal["jsonl"]
    path: Path | None = Field(None, description="None or '-' writes to stdout")
    rotate_bytes: ByteSize | None = Field(None, gt=0, description="rotate when a file exceeds")
    keep_files: int = Field(5, ge=1, description="rotated files kept: path.1 .. path.N")


class ModbusMap(_Strict):
    """Where the handshake lives on the PLC (zero-based protocol addresses).

    The signals `ok`, `nok`, `fault`, `result_valid` and `ack` are coils, or holding
    registers holding 0/1 when the sink's `bits` is "holding". `part_id` (one or two
    words, high word first), `heartbeat` and `lost_count` are holding registers.
    """

    ok: int = Field(0, ge=0, le=65535)
    nok: int = Field(1, ge=0, le=65535)
    fault: int = Field(2, ge=0, le=65535)
    result_valid: int = Field(3, ge=0, le=65535)
    ack: int | None = Field(None, ge=0, le=65535, description="set by the PLC; None: pulse")
    part_id: int = Field(0, ge=0, le=65535)
    part_id_words: Literal[1, 2] = 2
    heartbeat: int | None = Field(2, ge=0, le=65535, description="None: no heartbeat")
    lost_count: int | None = Field(
        None, ge=0, le=65535, description="results not signalled, mod 65536; None: not written"
    )


class ModbusSinkConfig(_SinkBase):
    """Modbus TCP handshake with a PLC; see `edge_sdk.sinks.modbus` for the sequence."""

    delivery_defaults: ClassVar[dict[str, Any]] = {"max_age_s": 2.0}
    type: Literal["modbus"]
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255)
    bits: Literal["coils", "holding"] = "coils"
    map: ModbusMap = ModbusMap()
    echo: Literal["frame_id", "part_id"] = Field(
        "frame_id", description="part_id falls back to frame_id when it is not an integer"
    )
    timeout_s: float = Field(0.5, gt=0.0, le=10.0, description="one request's response wait")
    pulse_s: float = Field(
        0.03, gt=0.0, description="result_valid high time without ack (>= 2 PLC scans)"
    )
    pulse_low_s: float = Field(
        0.02,
        gt=0.0,
        description="least time result_valid stays low between two results (>= 2 PLC scans)",
    )
    fault_hold_s: float = Field(
        1.0, gt=0.0, description="the fault bit stays up this long after a result was lost"
    )
    ack_timeout_s: float = Field(1.0, gt=0.0, description="wait for ack to rise (and fall)")
    ack_poll_s: float = Field(0.005, gt=0.0)
    heartbeat_interval_s: float = Field(0.5, gt=0.0)
    reconnect_initial_s: float = Field(0.2, gt=0.0)
    reconnect_max_s: float = Field(5.0, gt=0.0)

    @model_validator(mode="after")
    def _no_overlap(self) -> ModbusSinkConfig:
        m = self.map
        bits = {"ok": m.ok, "nok": m.nok, "fault": m.fault, "result_valid": m.result_valid}
        if m.ack is not None:
            bits["ack"] = m.ack
        words = {f"part_id+{i}": m.part_id + i for i in range(m.part_id_words)}
        if m.heartbeat is not None:
            words["heartbeat"] = m.heartbeat
        if m.lost_count is not None:
            words["lost_count"] = m.lost_count
        # Coils and holding registers are separate tables; in "holding" mode they share one.
        groups = [{**bits, **words}] if self.bits == "holding" else [bits, words]
        for group in groups:
            seen: dict[int, str] = {}
            for key, address in group.items():
                if address > 65535:
                    raise ValueError(f"map.{key}: address {address} is past 65535")
                if address in seen:
                    table = "holding register" if key in words or self.bits == "holding" else "coil"
                    raise ValueError(
                        f"map.{key} and map.{seen[address]} both use {table} {address}"
                    )
                seen[address] = key
        return self


class MqttSinkConfig(_SinkBase):
    """Results to `<topic_prefix>/<camera>/result` (QoS 1) and health (retained) to
    `<topic_prefix>/<camera>/health`, which the broker sets to offline if we die."""

    # Queued results hold no pixels (a few kB each), so a broker outage of up to a minute
    # at 10 parts/s loses nothing.
    delivery_defaults: ClassVar[dict[str, Any]] = {
        "max_age_s": 60.0,
        "retry_deadline_s": 60.0,
        "queue_size": 1000,
    }
    type: Literal["mqtt"]
    host: str
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = "edge-ad"
    camera: str | None = Field(None, description="default: the line's camera id")
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls_ca_file: Path | None = None
    keepalive_s: int = Field(10, ge=1)
    publish_timeout_s: float = Field(2.0, gt=0.0, description="wait for the broker's PUBACK")
    health_interval_s: float = Field(5.0, gt=0.0)
    reconnect_min_s: float = Field(0.5, gt=0.0)
    # A line that waits half a minute for its broker loses results: keep retrying often.
    reconnect_max_s: float = Field(2.0, gt=0.0)

    @model_validator(mode="after")
    def _topics(self) -> MqttSinkConfig:
        for key in ("topic_prefix", "camera"):
            value = getattr(self, key)
            if value is None:
                continue
            parts = value.split("/") if key == "topic_prefix" else [value]
            if not all(_TOPIC_SEGMENT.match(p) for p in parts):
                raise ValueError(
                    f"{key} {value!r} is not a usable MQTT topic part "
                    "(no '+', '#', empty levels" + (" or '/')" if key == "camera" else ")")
                )
        return self


class ArchiveSinkConfig(_SinkBase):
    """Rejects (and every Nth pass) saved as original PNG + overlay JPEG + JSON sidecar."""

    type: Literal["archive"]
    root: Path
    ok_every: int = Field(0, ge=0, description="keep every Nth OK; 0 keeps none")
    max_entries: int | None = Field(10_000, ge=1)
    max_bytes: ByteSize | None = Field(ByteSize(10 * 2**30), gt=0)
    min_free_bytes: ByteSize = Field(
        ByteSize(2 * 2**30), ge=0, description="stop writing below this much free disk space"
    )
    jpeg_quality: int = Field(90, ge=0, le=100)


class CallbackSinkConfig(_SinkBase):
    """A user callable named by import path, `package.module:attribute`. A class is
    instantiated with `options` as keyword arguments; a function is called as is."""

    type: Literal["callback"]
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    options: dict[str, Any] = {}


class CameraLineSinkConfig(_SinkBase):
    """A pulse on a camera output line per reject (or per pass); needs a GenICam camera
    with I/O lines (SFNC LineSelector, LineSource, UserOutputSelector, UserOutputValue)."""

    delivery_defaults: ClassVar[dict[str, Any]] = {"max_age_s": 2.0}
    type: Literal["camera_line"]
    line: str = "Line1"
    user_output: str = "UserOutput1"
    pulse_ms: float = Field(20.0, gt=0, le=5000)
    on: Literal["reject", "ok"] = "reject"


AnySinkConfig = (
    JsonlSinkConfig
    | ModbusSinkConfig
    | MqttSinkConfig
    | ArchiveSinkConfig
    | CallbackSinkConfig
    | CameraLineSinkConfig
)
SinkConfig = Annotated[AnySinkConfig, Field(discriminator="type")]

_ADAPTER: TypeAdapter[list[SinkConfig]] = TypeAdapter(list[SinkConfig])


def parse_sink_configs(data: Sequence[Any], *, source: str = "sinks") -> list[AnySinkConfig]:
    """Validate a list of sink entries (as loaded from YAML); names must be unique.

    Raises ConfigError naming the entry and key, e.g. ``sinks[1].map.ok``.

    >>> [c.type for c in parse_sink_configs([{"type": "jsonl"}, {"type": "archive", "root": "/a"}])]
    ['jsonl', 'archive']
    >>> parse_sink_configs([{"type": "jsonl", "pathh": "x"}])
    Traceback (most recent call last):
    ...
    edge_sdk.errors.ConfigError: sinks[0].jsonl.pathh: Extra inputs are not permitted (got 'x')
    """
    try:
        configs = _ADAPTER.validate_python(list(data))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = source + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]
            )
            value = err["input"]
            shown = err["type"] != "missing" and not isinstance(value, (dict, list))
            found = f" (got {_short(value)})" if shown else ""
            lines.append(f"{where}: {err['msg']}{found}")
        raise ConfigError("\n".join(lines)) from None
    seen: set[str] = set()
    for i, config in enumerate(configs):
        name = config.name or config.type
        if name in seen:
            raise ConfigError(
                f"{source}[{i}]: a second sink named {name!r}; give each sink a unique `name`"
            )
        seen.add(name)
    return configs


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
