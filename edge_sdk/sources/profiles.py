"""Camera profiles: the GenICam feature values one camera needs for one part.

A profile is a YAML file in ``calibration/`` validated by `CameraProfile`. The named
settings use units in their keys and map to SFNC features (older names are tried when
the SFNC one is missing); anything else goes in `features`, applied in the order written,
after the named settings. Example (``calibration/viky-mono8.yaml``)::

    name: viky-mono8
    pixel_format: Mono8
    width: 640
    height: 480
    frame_rate_hz: 50
    buffer_handling: newest_only
    features: {BouncingBallSize: 20}

`apply_profile` writes them to a camera's node map; a feature the camera lacks or a value
it refuses raises `FeatureError` naming the feature and the values it allows (read from
the node: enumeration entries, minimum/maximum/increment).
"""

from __future__ import annotations

import difflib
import logging
import os
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
from edge_sdk.sources.errors import FeatureError

__all__ = ["BufferHandling", "CameraProfile", "TriggerSettings", "apply_profile", "load_profile"]

logger = logging.getLogger(__name__)

BufferHandling = Literal["newest_only", "oldest_first"]
FeatureValue = bool | int | float | str

# Profile key -> feature names to try, SFNC first, then names older cameras use.
_NAMED: dict[str, tuple[str, ...]] = {
    "pixel_format": ("PixelFormat",),
    "width": ("Width",),
    "height": ("Height",),
    "offset_x": ("OffsetX",),
    "offset_y": ("OffsetY",),
    "exposure_us": ("ExposureTime", "ExposureTimeAbs"),
    "gain_db": ("Gain", "GainAbs"),
    "frame_rate_hz": ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"),
}
# Switches that must be in this state for a named value to take effect, set when present.
_ENABLERS: dict[str, tuple[str, FeatureValue]] = {
    "exposure_us": ("ExposureAuto", "Off"),
    "gain_db": ("GainAuto", "Off"),
    "frame_rate_hz": ("AcquisitionFrameRateEnable", True),
}


class TriggerSettings(BaseModel):
    """What starts a frame: free run, a software command, or a hardware line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["off", "software", "hardware"] = "off"
    selector: str = "FrameStart"
    source: str | None = Field(default=None, description="e.g. Line0; hardware mode only")
    activation: str | None = Field(default=None, description="e.g. RisingEdge")
    delay_us: float | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `mode: off` as false; that is what the user meant.
        return "off" if value is False else value

    @model_validator(mode="after")
    def _source_matches_mode(self) -> TriggerSettings:
        if self.mode == "hardware" and not self.source:
            raise ValueError("trigger mode 'hardware' needs a source (e.g. source: Line0)")
        if self.mode != "hardware" and self.source not in (None, "Software"):
            raise ValueError(f"trigger source {self.source!r} only applies to mode 'hardware'")
        return self


class CameraProfile(BaseModel):
    """GenICam settings for one camera and part; None leaves the camera's value as is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    description: str = ""
    pixel_format: str | None = None
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    offset_x: int | None = Field(default=None, ge=0)
    offset_y: int | None = Field(default=None, ge=0)
    exposure_us: float | None = Field(default=None, gt=0)
    gain_db: float | None = None
    frame_rate_hz: float | None = Field(default=None, gt=0)
    trigger: TriggerSettings = TriggerSettings()
    buffer_handling: BufferHandling | None = Field(
        default=None,
        description="None: newest_only in free run, oldest_first when triggered",
    )
    num_buffers: int | None = Field(default=None, ge=1, le=256)
    features: dict[str, FeatureValue] = Field(default_factory=dict)

    @property
    def effective_buffer_handling(self) -> BufferHandling:
        """Newest-only for free run (no stale frames), oldest-first when triggered (no
        part skipped), unless the profile says otherwise."""
        if self.buffer_handling is not None:
            return self.buffer_handling
        return "newest_only" if self.trigger.mode == "off" else "oldest_first"


def load_profile(path: str | os.PathLike[str]) -> CameraProfile:
    """Read and validate a profile YAML file; errors name the file and the field.

    >>> from pathlib import Path
    >>> root = Path(__file__).resolve().parents[2]
    >>> load_profile(root / "calibration" / "viky-mono8.yaml").pixel_format
    'Mono8'
    """
    file = Path(path).expanduser()
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"camera profile {file} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"camera profile {file} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"camera profile {file}: expected a mapping of settings")
    try:
        profile = CameraProfile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"camera profile {file}: {problems}") from exc
    if not profile.name:
        profile = profile.model_copy(update={"name": file.stem})
    return profile


def apply_profile(node_map: Any, profile: CameraProfile, *, camera: str = "camera") -> None:
    """Write a profile's values to a camera's (remote device) node map, in a safe order.

    Offsets go to 0 before the size changes and are set after it, because the camera
    checks offset + size against the sensor at every write.
    """
    settings = profile.model_dump(exclude_none=True)
    if "pixel_format" in settings:
        _set_named(node_map, "pixel_format", settings["pixel_format"], camera)
    for key in ("offset_x", "offset_y"):
        if key in settings:
            _set_named(node_map, key, 0, camera)
    for key in ("width", "height", "offset_x", "offset_y"):
        if key in settings:
            _set_named(node_map, key, settings[key], camera)
    for key in ("frame_rate_hz", "exposure_us", "gain_db"):
        if key in settings:
            enabler, state = _ENABLERS[key]
            if node_map.has_node(enabler):
                set_feature(node_map, enabler, state, camera=camera)
            _set_named(node_map, key, settings[key], camera)
    _apply_trigger(node_map, profile.trigger, camera)
    for name, value in profile.features.items():
        set_feature(node_map, name, value, camera=camera)
    logger.info("camera %s: profile %r applied", camera, profile.name or "(unnamed)")


def _apply_trigger(node_map: Any, trigger: TriggerSettings, camera: str) -> None:
    if trigger.mode == "off":
        # A camera without a trigger is in free run already; one with must be told.
        if node_map.has_node("TriggerMode"):
            if node_map.has_node("TriggerSelector"):
                set_feature(node_map, "TriggerSelector", trigger.selector, camera=camera)
            set_feature(node_map, "TriggerMode", "Off", camera=camera)
        return
    if node_map.has_node("TriggerSelector"):
        set_feature(node_map, "TriggerSelector", trigger.selector, camera=camera)
    set_feature(node_map, "TriggerMode", "On", camera=camera)
    source = "Software" if trigger.mode == "software" else str(trigger.source)
    set_feature(node_map, "TriggerSource", source, camera=camera)
    if trigger.activation is not None:
        set_feature(node_map, "TriggerActivation", trigger.activation, camera=camera)
    if trigger.delay_us is not None:
        set_feature(node_map, "TriggerDelay", trigger.delay_us, camera=camera)


def _set_named(node_map: Any, key: str, value: FeatureValue, camera: str) -> None:
    names = _NAMED[key]
    for name in names:
        if node_map.has_node(name):
            set_feature(node_map, name, value, camera=camera, key=key)
            return
    raise FeatureError(
        f"camera {camera} has no feature {' or '.join(names)} (profile key {key}); "
        f"remove {key} from the profile for this camera"
    )


def set_feature(
    node_map: Any, name: str, value: FeatureValue, *, camera: str = "camera", key: str = ""
) -> None:
    """Set one feature, checking it exists, is writable and accepts the value first.

    The error names the feature and what it allows, read from the node itself.
    """
    from genicam import genapi

    where = f" (profile key {key})" if key else ""
    if not node_map.has_node(name):
        names = [n.node.name for n in node_map.nodes]
        close = difflib.get_close_matches(name, names, n=5)
        hint = f"; similar features: {', '.join(close)}" if close else ""
        raise FeatureError(f"camera {camera} has no feature {name!r}{where}{hint}")
    node = node_map.get_node(name)
    if not genapi.is_writable(node):
        raise FeatureError(
            f"camera {camera}: feature {name!r}{where} is not writable now "
            f"(locked while acquiring, or read-only on this camera)"
        )
    allowed = describe_allowed(node)
    kind = type(node).__name__
    try:
        if kind == "IEnumeration":
            if str(value) not in node.symbolics:
                raise FeatureError(
                    f"camera {camera}: feature {name!r}{where} refuses {value!r}; "
                    f"allowed: {allowed}"
                )
            node.value = str(value)
        elif kind == "ICommand":
            if value is not True:
                raise FeatureError(f"camera {camera}: command {name!r} takes `true` (execute)")
            node.execute()
        elif kind == "IInteger":
            node.value = _checked_number(int(value), node, name, where, camera)
        elif kind == "IFloat":
            node.value = _checked_number(float(value), node, name, where, camera)
        elif kind == "IBoolean":
            node.value = bool(value)
        else:
            node.from_string(str(value))
    except FeatureError:
        raise
    except (ValueError, TypeError) as exc:
        raise FeatureError(
            f"camera {camera}: feature {name!r}{where} refuses {value!r} ({exc}); "
            f"allowed: {allowed}"
        ) from exc
    except Exception as exc:  # genapi's own exceptions: out of range, invalid, access
        raise FeatureError(
            f"camera {camera}: feature {name!r}{where} refuses {value!r}: "
            f"{str(exc).split(' : ')[0]}; allowed: {allowed}"
        ) from exc
    logger.debug("camera %s: %s = %r", camera, name, value)


def describe_allowed(node: Any) -> str:
    """What a feature node accepts, in words (entries, or minimum/maximum/increment)."""
    kind = type(node).__name__
    try:
        if kind == "IEnumeration":
            return ", ".join(node.symbolics)
        if kind in ("IInteger", "IFloat"):
            inc = getattr(node, "inc", None) if kind == "IInteger" else None
            step = f" in steps of {inc}" if inc not in (None, 1) else ""
            return f"{node.min} to {node.max}{step}"
        if kind == "IBoolean":
            return "true, false"
    except Exception:  # a node may refuse to report its range while locked
        pass
    return "see the camera's documentation"


def _checked_number(value: float, node: Any, name: str, where: str, camera: str) -> Any:
    low, high = node.min, node.max
    inc = int(getattr(node, "inc", 1) or 1) if isinstance(value, int) else 1
    off_grid = inc > 1 and (int(value) - low) % inc != 0
    if not low <= value <= high or off_grid:
        raise FeatureError(
            f"camera {camera}: feature {name!r}{where} refuses {value!r}; "
            f"allowed: {describe_allowed(node)}"
        )
    return value
