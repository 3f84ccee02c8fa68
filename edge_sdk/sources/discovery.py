"""Finding GenICam cameras and resolving the name a user gave to one device.

Every device of every GenTL producer from `edge_sdk.sources.producers.find_producers` is listed
through one Harvester, so the index shown by ``edge-ad cameras`` is the index that
``--camera 2`` opens.

Harvesters can load a GenTL producer once per process: a second Harvester on the same .cti
lists no devices while the first is open. So every camera of a process shares one
Harvester (`lease_harvester`), and listing uses it too while it is open.

A selector names one camera. In this order it may be: a configured alias (``cam0``, whose
value is itself a selector), a serial number, a user-defined name, a device id, or an
index. Prefixes force one reading: ``serial:0``, ``name:Left``, ``id:VikyTL_DEV_red``,
``index:2``. A user-defined name that several cameras share is refused, not guessed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_sdk.errors import ConfigError, require
from edge_sdk.sources.errors import CameraNotFoundError
from edge_sdk.sources.producers import Producer, find_producers

__all__ = [
    "CameraInfo",
    "format_cameras",
    "lease_harvester",
    "list_cameras",
    "open_harvester",
    "refresh_harvester",
    "release_harvester",
    "select_camera",
]

logger = logging.getLogger(__name__)

_PREFIXES = ("serial", "name", "id", "index")


@dataclass(frozen=True)
class CameraInfo:
    """One GenICam device as its producer describes it (fields it lacks are "")."""

    index: int
    vendor: str
    model: str
    serial: str
    user_name: str
    device_id: str
    tl_type: str
    producer: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    @property
    def label(self) -> str:
        """A short human name: model, serial and user-defined name."""
        name = f" {self.user_name!r}" if self.user_name else ""
        return f"{self.vendor} {self.model} serial {self.serial}{name}"


def open_harvester(producers: Sequence[Producer]) -> Any:
    """A Harvester with every producer loaded and its device list updated.

    Harvesters silently lists no devices for a missing or broken .cti unless asked to
    check, so both checks are on and a failure names the file. The caller resets it.
    """
    harvesters_core = require("harvesters.core", extra="camera", feature="GenICam cameras")
    harvester = harvesters_core.Harvester()  # type: ignore[attr-defined]
    try:
        for producer in producers:
            try:
                harvester.add_file(str(producer.path), check_existence=True, check_validity=True)
            except OSError as exc:
                raise ConfigError(
                    f"GenTL producer {producer.path} (from {producer.origin}) cannot be "
                    f"loaded: {exc or 'file not found'}"
                ) from exc
        harvester.update()
    except BaseException:
        harvester.reset()
        raise
    return harvester


class _Shared:
    """The process's one Harvester, the producers it loaded and how many sources use it."""

    lock = threading.Lock()
    harvester: Any = None
    paths: frozenset[Path] = frozenset()
    users = 0


def _paths(producers: Sequence[Producer]) -> frozenset[Path]:
    return frozenset(p.path.resolve() for p in producers)


def lease_harvester(producers: Sequence[Producer]) -> Any:
    """The process-wide Harvester with `producers` loaded; pair with `release_harvester`.

    Producers cannot be added to a Harvester that has cameras open (updating it
    invalidates them), so a later lease must ask for producers already loaded.
    """
    wanted = _paths(producers)
    with _Shared.lock:
        if _Shared.harvester is None:
            _Shared.harvester = open_harvester(producers)
            _Shared.paths = wanted
        elif not wanted <= _Shared.paths:
            missing = ", ".join(sorted(str(p) for p in wanted - _Shared.paths))
            raise ConfigError(
                f"GenTL producer(s) {missing} cannot be added while cameras are open with "
                f"{', '.join(sorted(str(p) for p in _Shared.paths))}: all cameras of one "
                "process must be configured with the same producers"
            )
        _Shared.users += 1
        return _Shared.harvester


def release_harvester() -> None:
    """Give back one lease; the last one resets the Harvester (unloads the producers)."""
    with _Shared.lock:
        _Shared.users = max(0, _Shared.users - 1)
        if _Shared.users == 0 and _Shared.harvester is not None:
            harvester, _Shared.harvester, _Shared.paths = _Shared.harvester, None, frozenset()
            try:
                harvester.reset()
            except Exception:
                logger.exception("releasing the GenTL producers failed")


def refresh_harvester() -> bool:
    """Re-enumerate devices if no other camera is open; False when that is not safe.

    ``Harvester.update()`` destroys every acquirer of that Harvester, so with other
    cameras running a reconnect must make do with the device list it has.
    """
    with _Shared.lock:
        if _Shared.harvester is None or _Shared.users != 1:
            return False
        _Shared.harvester.update()
        return True


def describe(harvester: Any) -> list[CameraInfo]:
    """The devices an updated Harvester knows, in its own index order."""
    return [_info(i, d) for i, d in enumerate(harvester.device_info_list)]


def list_cameras(
    producer_paths: Sequence[str | os.PathLike[str]] = (), *, include_simulator: bool = True
) -> list[CameraInfo]:
    """Every device of every GenTL producer found (see `edge_sdk.sources.producers`).

    >>> [c.serial for c in list_cameras() if c.model == "Viky"]
    ['0', '1', '2']
    """
    producers = find_producers(producer_paths, include_simulator=include_simulator)
    if not producers:
        return []
    with _Shared.lock:
        if _Shared.harvester is not None and _paths(producers) <= _Shared.paths:
            # A second Harvester would see no devices: list from the one cameras use.
            return describe(_Shared.harvester)
    harvester = open_harvester(producers)
    try:
        return describe(harvester)
    finally:
        harvester.reset()


def select_camera(
    cameras: Sequence[CameraInfo],
    selector: str | int,
    *,
    aliases: Mapping[str, str | int] | None = None,
) -> CameraInfo:
    """The one camera `selector` names, or `CameraNotFoundError` listing the cameras.

    >>> cams = list_cameras()
    >>> select_camera(cams, "cam1", aliases={"cam1": "serial:1"}).serial
    '1'
    """
    original = selector
    aliases = aliases or {}
    seen: list[str] = []
    # Aliases may point at aliases; the seen-list stops a loop.
    while isinstance(selector, str) and selector in aliases and selector not in seen:
        seen.append(selector)
        selector = aliases[selector]
    text = str(selector).strip()
    kind, _, value = text.partition(":")
    if kind in _PREFIXES and value:
        found = _match(cameras, kind, value)
    else:
        found = []
        for kind in _PREFIXES:
            found = _match(cameras, kind, text)
            if found:
                break
    if len(found) == 1:
        return found[0]
    via = f" (alias {original!r} -> {text!r})" if seen else ""
    if len(found) > 1:
        raise CameraNotFoundError(
            f"camera {text!r}{via} is ambiguous: {len(found)} cameras match as {kind}; "
            f"select by serial number or index instead:\n{format_cameras(found)}"
        )
    known = f"; configured aliases: {', '.join(sorted(aliases))}" if aliases else ""
    listing = format_cameras(cameras) if cameras else "  (none: no GenTL producer lists a device)"
    raise CameraNotFoundError(
        f"no camera matches {text!r}{via}: expected an alias, a serial number, a "
        f"user-defined name, a device id or an index{known}. Cameras found:\n{listing}"
    )


def format_cameras(cameras: Sequence[CameraInfo]) -> str:
    """A table of cameras, one a line, for messages and the CLI."""
    rows = [("#", "vendor", "model", "serial", "user name", "producer")]
    rows += [
        (str(c.index), c.vendor, c.model, c.serial, c.user_name or "-", Path(c.producer).name)
        for c in cameras
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _match(cameras: Sequence[CameraInfo], kind: str, value: str) -> list[CameraInfo]:
    if kind == "index":
        return [c for c in cameras if value.isdigit() and c.index == int(value)]
    field = {"serial": "serial", "name": "user_name", "id": "device_id"}[kind]
    return [c for c in cameras if value and getattr(c, field) == value]


def _info(index: int, device: Any) -> CameraInfo:
    def get(name: str) -> str:
        # Producers raise NotAvailable for fields they do not implement (viky: user name).
        try:
            value = getattr(device, name)
        except Exception:
            return ""
        return "" if value is None else str(value)

    try:
        producer = str(device.parent.parent.module.path_name)
    except Exception:
        producer = ""
    return CameraInfo(
        index=index,
        vendor=get("vendor"),
        model=get("model"),
        serial=get("serial_number"),
        user_name=get("user_defined_name"),
        device_id=get("id_"),
        tl_type=get("tl_type"),
        producer=producer,
    )
