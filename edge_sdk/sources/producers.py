"""Finding GenTL producers (the ``*.cti`` libraries through which Harvesters reaches cameras).

Three places are searched, in this order, and a file found twice is listed once (by its
resolved path, the first place wins):

1. the folders and files in ``GENICAM_GENTL64_PATH``, which camera vendors' installers set;
2. paths from the configuration (``extra_paths``);
3. the simulator ``viky.cti`` that ships inside the ``genicam`` wheel.

Discovery only looks at files: neither Harvesters nor genicam is imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_sdk.errors import ConfigError

__all__ = ["ENV_VAR", "Producer", "ProducerOrigin", "find_producers", "simulator_path"]

logger = logging.getLogger(__name__)

ENV_VAR = "GENICAM_GENTL64_PATH"
ProducerOrigin = Literal["GENICAM_GENTL64_PATH", "config", "simulator"]


@dataclass(frozen=True)
class Producer:
    """A GenTL producer file and where discovery found it."""

    path: Path
    origin: ProducerOrigin


def find_producers(
    extra_paths: Sequence[str | os.PathLike[str]] = (), *, include_simulator: bool = True
) -> list[Producer]:
    """The GenTL producers on this machine, environment first, then config, then simulator.

    Entries of ``GENICAM_GENTL64_PATH`` that are missing or not producers are skipped with
    a warning (installers leave stale entries behind; that must not stop the line). A bad
    entry in `extra_paths` is the user's own configuration, so it raises `ConfigError`
    naming the path. Folders are searched non-recursively; a ``.cti`` file is taken as is.

    >>> sim = find_producers()[-1]
    >>> sim.origin, sim.path.name
    ('simulator', 'viky.cti')
    """
    found: list[Producer] = []
    seen: set[Path] = set()

    def add(path: Path, origin: ProducerOrigin) -> None:
        key = path.resolve()
        if key in seen:
            logger.debug("GenTL producer %s (%s) already listed", path, origin)
            return
        seen.add(key)
        found.append(Producer(path=path, origin=origin))

    for path in _from_environment():
        add(path, "GENICAM_GENTL64_PATH")
    for raw in extra_paths:
        for path in _from_config(Path(raw).expanduser()):
            add(path, "config")
    if include_simulator:
        simulator = simulator_path()
        if simulator is None:
            logger.info("the genicam package and its simulator viky.cti were not found")
        else:
            add(simulator, "simulator")
    return found


def simulator_path() -> Path | None:
    """The simulated producer ``viky.cti`` inside the installed ``genicam`` package, or None.

    >>> simulator_path().name
    'viky.cti'
    """
    try:
        # find_spec on a top-level name locates the package without executing it.
        spec = importlib.util.find_spec("genicam")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        hits = sorted(Path(folder).rglob("viky.cti"))
        if hits:
            return hits[0]
    return None


def _is_cti(path: Path) -> bool:
    return path.suffix.lower() == ".cti" and path.is_file()


def _ctis_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_cti(p))


def _from_environment() -> Iterator[Path]:
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if not entry.strip():
            continue
        path = Path(entry.strip()).expanduser()
        if not path.is_absolute():
            # Relative to what? Services start in "/", so this would mean something else
            # under systemd than in the shell where it was tested.
            logger.warning("%s entry %r is not an absolute path; skipped", ENV_VAR, entry)
        elif path.is_dir():
            try:
                yield from _ctis_in(path)
            except OSError as exc:
                logger.warning("%s entry %s cannot be listed (%s); skipped", ENV_VAR, path, exc)
        elif _is_cti(path):
            yield path
        elif path.exists():
            logger.warning(
                "%s entry %s is neither a folder nor a .cti file; skipped", ENV_VAR, path
            )
        else:
            logger.warning("%s entry %s does not exist; skipped", ENV_VAR, path)


def _from_config(path: Path) -> list[Path]:
    if not path.is_absolute():
        raise ConfigError(
            f"GenTL producer path {path} is relative; expected an absolute path "
            "(resolve it against the folder of the configuration file that names it)"
        )
    if path.is_dir():
        try:
            ctis = _ctis_in(path)
        except OSError as exc:
            raise ConfigError(f"GenTL producer folder {path} cannot be listed: {exc}") from exc
        if not ctis:
            raise ConfigError(f"GenTL producer folder {path} contains no .cti file")
        return ctis
    if _is_cti(path):
        return [path]
    if path.exists():
        raise ConfigError(f"GenTL producer path {path} is not a .cti file or a folder")
    raise ConfigError(f"GenTL producer path {path} does not exist")
