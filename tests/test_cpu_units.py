"""The instruction-level peak from a CPU's flags, on the CPUs this project has met."""

from __future__ import annotations

import doctest

import pytest

from edge_sdk.tools import cpu_units
from edge_sdk.tools.cpu_units import best_units, cpu_info, parse_cpuinfo

ZEN2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
physical id\t: 0
core id\t: 0
cpu MHz\t\t: 2245.780
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
physical id\t: 0
core id\t: 1
cpu MHz\t\t: 2245.780
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2
"""
ZEN4_FLAGS = "fma avx2 avx512f avx512_vnni avx512_bf16"


def test_module_doctests() -> None:
    assert doctest.testmod(cpu_units).failed == 0


def test_units_by_cpu() -> None:
    zen2 = parse_cpuinfo(ZEN2, clock_ghz=2.0)
    assert zen2.physical_cores in (1, 2)  # the processors this process may use
    units = best_units(zen2)
    assert (units["fp32"].name, units["fp32"].macs_per_cycle) == ("AVX2 FMA fp32", 16)
    assert units["int8"].macs_per_cycle == 32 and "bf16" not in units
    zen4 = parse_cpuinfo(ZEN2.replace("fma avx2 bmi2", ZEN4_FLAGS), physical_cores=2)
    units = best_units(zen4)
    if zen4.clock_source != "cpufreq max":  # the kernel's max clock wins where it is known
        assert zen4.clock_ghz == pytest.approx(2.24578) and "cpu MHz" in zen4.clock_source
    # AMD runs 512-bit instructions as two halves: the width per cycle is AVX2's.
    assert [units[k].macs_per_cycle for k in ("fp32", "bf16", "int8")] == [16, 32, 64]
    xeon = parse_cpuinfo(cpu_units.SAMPLE_SAPPHIRE_RAPIDS, physical_cores=2, clock_ghz=2.0)
    units = best_units(xeon)
    assert [units[k].name for k in ("fp32", "bf16", "int8")] == [
        "AVX-512 FMA fp32",
        "AMX-BF16",
        "AMX-INT8",
    ]
    assert units["fp32"].peak_gops == 2 * 32 * 2 * 2.0
    assert xeon.record()["flags"] == sorted(set(cpu_units.FLAGS_THAT_MATTER) - {"avx_vnni"})


def test_this_machine() -> None:
    info = cpu_info()
    if info is None:  # not Linux
        return
    assert info.physical_cores >= 1 and info.clock_ghz > 0
    assert best_units(info)["fp32"].peak_gops > 0
