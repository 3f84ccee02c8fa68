"""GenTL producer discovery, against the real simulator that ships in the genicam wheel."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import pytest

from edge_sdk.errors import ConfigError
from edge_sdk.sources.producers import ENV_VAR, Producer, find_producers, simulator_path


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own camera installs must not leak into the results.
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def sim() -> Path:
    path = simulator_path()
    assert path is not None, "the genicam wheel (a harvesters dependency) ships viky.cti"
    return path


@pytest.fixture
def vendor_dir(tmp_path: Path, sim: Path) -> Path:
    """A folder laid out like a vendor install: one producer, other files, a subfolder."""
    folder = tmp_path / "vendor" / "lib"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(sim, folder / "acme.cti")
    shutil.copy(sim, folder / "nested" / "deep.cti")  # not searched: non-recursive
    (folder / "README.txt").write_text("not a producer")
    (folder / "fake.cti").mkdir()  # a folder named like a producer is not one
    return folder


def test_simulator_is_the_real_viky_in_the_genicam_package(sim: Path) -> None:
    spec = importlib.util.find_spec("genicam")
    assert spec is not None and spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations))).resolve()
    assert sim.name == "viky.cti"
    assert sim.is_file() and sim.stat().st_size > 0
    assert package in sim.resolve().parents


def test_without_environment_only_the_simulator(sim: Path) -> None:
    assert find_producers() == [Producer(path=sim, origin="simulator")]
    assert find_producers(include_simulator=False) == []


def test_environment_folder_is_searched_non_recursively(vendor_dir: Path, sim: Path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(vendor_dir))
    assert find_producers() == [
        Producer(path=vendor_dir / "acme.cti", origin="GENICAM_GENTL64_PATH"),
        Producer(path=sim, origin="simulator"),
    ]


def test_environment_accepts_a_file_and_skips_stale_entries(
    vendor_dir: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    direct = vendor_dir / "nested" / "deep.cti"
    entries = [
        str(tmp_path / "uninstalled"),  # vendors' uninstallers leave these behind
        "",
        "relative/dir",
        str(vendor_dir / "README.txt"),
        str(direct),
    ]
    monkeypatch.setenv(ENV_VAR, os.pathsep.join(entries))
    with caplog.at_level(logging.WARNING, logger="edge_sdk.sources.producers"):
        found = find_producers(include_simulator=False)
    assert found == [Producer(path=direct, origin="GENICAM_GENTL64_PATH")]
    logged = caplog.text
    assert "uninstalled" in logged and "relative/dir" in logged and "README.txt" in logged


def test_duplicates_are_listed_once_first_origin_wins(
    vendor_dir: Path, sim: Path, monkeypatch
) -> None:
    link = vendor_dir / "viky-link.cti"
    link.symlink_to(sim)  # same file as the simulator under another name
    acme = vendor_dir / "acme.cti"
    monkeypatch.setenv(ENV_VAR, os.pathsep.join([str(vendor_dir), str(acme), str(vendor_dir)]))
    found = find_producers([acme, vendor_dir, str(sim)])
    assert found == [
        Producer(path=acme, origin="GENICAM_GENTL64_PATH"),
        Producer(path=link, origin="GENICAM_GENTL64_PATH"),
    ]


def test_config_paths_come_after_the_environment(vendor_dir: Path, sim: Path, monkeypatch):
    other = vendor_dir.parent / "other.cti"
    shutil.copy(sim, other)
    monkeypatch.setenv(ENV_VAR, str(vendor_dir))
    found = find_producers([str(other), vendor_dir / "nested"])
    assert [(p.path.name, p.origin) for p in found] == [
        ("acme.cti", "GENICAM_GENTL64_PATH"),
        ("other.cti", "config"),
        ("deep.cti", "config"),
        ("viky.cti", "simulator"),
    ]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("missing.cti", "does not exist"),
        ("README.txt", "not a .cti"),
        ("empty", "no .cti"),
    ],
)
def test_bad_config_path_raises_naming_it(vendor_dir: Path, name: str, why: str) -> None:
    (vendor_dir / "empty").mkdir()
    bad = vendor_dir / name
    with pytest.raises(ConfigError, match=why) as info:
        find_producers([bad])
    assert str(bad) in str(info.value)


def test_relative_config_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="relative"):
        find_producers(["producers/acme.cti"])


def test_a_found_copy_is_a_working_producer(vendor_dir: Path, monkeypatch) -> None:
    """What discovery finds, Harvesters can open: the copy lists the simulator's cameras."""
    harvesters_core = pytest.importorskip("harvesters.core")
    monkeypatch.setenv(ENV_VAR, str(vendor_dir))
    (found,) = find_producers(include_simulator=False)
    h = harvesters_core.Harvester()
    try:
        h.add_file(str(found.path))
        h.update()
        assert len(h.device_info_list) > 0
    finally:
        h.reset()
