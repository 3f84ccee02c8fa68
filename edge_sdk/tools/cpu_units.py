"""The CPU's instruction-level peak: cores x clock x the multiply-accumulates per cycle of
the best unit it has for each numeric kind, from its flags. No kernel reaches it; it is the
ceiling against which the measured peaks (:mod:`edge_sdk.tools.peak`) and a model's time
are judged, so a run that "beats its floor" cannot happen.

Multiply-accumulates per cycle and core, as the vendors state them:

    AMX (TMUL)         int8 1024, bf16 512
    AVX-512 / AVX2     a vector FMA width per cycle of 2 x 512 bits on Intel cores with
                       AVX-512, 2 x 256 bits otherwise (AMD Zen 4 runs 512-bit
                       instructions as two 256-bit halves): fp32 = bits / 32;
                       bf16 with AVX512-BF16 = bits / 16; int8 with VNNI (AVX512-VNNI or
                       AVX-VNNI) = bits / 8, without it bits / 16 (vpmaddubsw pairs)

The clock is the core's maximum frequency where the kernel tells it
(``cpufreq/cpuinfo_max_freq``), else the "cpu MHz" of ``/proc/cpuinfo`` (a VM's nominal
clock); the record says which.

>>> info = parse_cpuinfo(SAMPLE_SAPPHIRE_RAPIDS, physical_cores=2, clock_ghz=2.0)
>>> unit = best_units(info)["int8"]
>>> unit.name, unit.macs_per_cycle, round(unit.peak_gops)
('AMX-INT8', 1024, 8192)
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The flags that decide the units, in the spelling of Linux's /proc/cpuinfo.
FLAGS_THAT_MATTER = (
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "avx2",
    "fma",
)
_CPUINFO = Path("/proc/cpuinfo")
_MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    vendor: str
    flags: frozenset[str]  # of FLAGS_THAT_MATTER
    physical_cores: int  # that this process may run on
    clock_ghz: float
    clock_source: str

    def record(self) -> dict[str, Any]:
        """JSON-ready, for benchmark results."""
        return {
            "model": self.model,
            "vendor": self.vendor,
            "flags": sorted(self.flags),
            "physical_cores": self.physical_cores,
            "clock_ghz": round(self.clock_ghz, 3),
            "clock_source": self.clock_source,
        }


@dataclass(frozen=True)
class Unit:
    """The best unit for one numeric kind and its instruction-level peak on all cores."""

    name: str
    macs_per_cycle: int  # per core
    cores: int
    clock_ghz: float

    @property
    def peak_gops(self) -> float:
        """GOP/s (2 operations per multiply-accumulate) on every core at the clock."""
        return 2 * self.macs_per_cycle * self.cores * self.clock_ghz

    def record(self) -> dict[str, Any]:
        return {
            "unit": self.name,
            "macs_per_cycle_per_core": self.macs_per_cycle,
            "cores": self.cores,
            "clock_ghz": round(self.clock_ghz, 3),
            "peak_gops": round(self.peak_gops, 1),
        }


def parse_cpuinfo(
    text: str, *, physical_cores: int | None = None, clock_ghz: float | None = None
) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (x86 Linux). Cores count the
    distinct (package, core) pairs among the processors this process may use, unless given.
    """
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    fields = [dict(_field(line) for line in b.splitlines() if ":" in line) for b in blocks]
    first = fields[0] if fields else {}
    flags = frozenset(first.get("flags", "").split()) & frozenset(FLAGS_THAT_MATTER)
    if physical_cores is None:
        allowed = _allowed_cpus()
        cores = {
            (f.get("physical id", "0"), f.get("core id", f.get("processor", "0")))
            for f in fields
            if allowed is None or int(f.get("processor", "-1")) in allowed
        }
        physical_cores = max(1, len(cores))
    source = "given"
    if clock_ghz is None:
        clock_ghz, source = _clock(first)
    return CpuInfo(
        model=first.get("model name", platform.processor() or platform.machine()),
        vendor=first.get("vendor_id", "unknown"),
        flags=flags,
        physical_cores=physical_cores,
        clock_ghz=clock_ghz,
        clock_source=source,
    )


def _field(line: str) -> tuple[str, str]:
    key, _, value = line.partition(":")
    return key.strip(), value.strip()


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _clock(first: dict[str, str]) -> tuple[float, str]:
    try:
        return int(_MAX_FREQ.read_text()) / 1e6, "cpufreq max"
    except (OSError, ValueError):
        pass
    try:
        return float(first["cpu MHz"]) / 1e3, "/proc/cpuinfo cpu MHz (nominal)"
    except (KeyError, ValueError):
        return 0.0, "unknown"


def cpu_info() -> CpuInfo | None:
    """This machine's CPU, or None where /proc/cpuinfo is not there (not Linux)."""
    try:
        return parse_cpuinfo(_CPUINFO.read_text())
    except OSError:
        return None


def best_units(info: CpuInfo) -> dict[str, Unit]:
    """For "int8", "bf16" and "fp32": the fastest unit the CPU has, and its peak."""
    f = info.flags
    wide = "avx512f" in f and info.vendor == "GenuineIntel"
    bits = 1024 if wide else 512 if ({"avx2", "avx512f"} & f) else 256
    vec = "AVX-512" if "avx512f" in f else "AVX2" if "avx2" in f else "SSE"
    units: dict[str, tuple[str, int]] = {"fp32": (f"{vec} FMA fp32", bits // 32)}
    if "amx_bf16" in f:
        units["bf16"] = ("AMX-BF16", 512)
    elif "avx512_bf16" in f:
        units["bf16"] = ("AVX512-BF16", bits // 16)
    if "amx_int8" in f:
        units["int8"] = ("AMX-INT8", 1024)
    elif "avx512_vnni" in f:
        units["int8"] = ("AVX512-VNNI", bits // 8)
    elif "avx_vnni" in f:
        units["int8"] = ("AVX-VNNI", 512 // 8)
    else:
        units["int8"] = (f"{vec} int8 (no VNNI)", bits // 16)
    return {
        kind: Unit(name, macs, info.physical_cores, info.clock_ghz)
        for kind, (name, macs) in units.items()
    }


SAMPLE_SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t: 0
cpu MHz\t: 2000.000
flags\t: fpu avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
