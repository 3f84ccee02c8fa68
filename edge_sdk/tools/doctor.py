"""What ``edge-ad doctor`` checks: packages, ONNX Runtime providers, GPU, cameras, permissions.

`collect` gathers plain JSON-ready data and never raises: a check that fails is recorded
as its error, so the doctor still reports on a machine where half the stack is broken.
`format_report` turns that data into the text the command prints. Each finding the user
should act on is also a sentence in ``report["problems"]``.
"""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["PREFERRED_PROVIDERS", "collect", "format_report"]

logger = logging.getLogger(__name__)

# The order docs/architecture.md fixes for choosing a provider.
PREFERRED_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)
_GPU_PROVIDERS = PREFERRED_PROVIDERS[:2]
_NVIDIA_SMI_TIMEOUT_S = 5.0
_CORE_PACKAGES = {  # shown name -> module to import
    "numpy": "numpy",
    "opencv": "cv2",
    "onnxruntime": "onnxruntime",
    "pydantic": "pydantic",
}


def collect() -> dict[str, Any]:
    """Run every check and return the findings as JSON-serialisable data.

    >>> import json
    >>> report = collect()
    >>> "CPUExecutionProvider" in report["onnxruntime"]["available_providers"]
    True
    >>> isinstance(json.dumps(report), str)
    True
    """
    problems: list[str] = []
    report: dict[str, Any] = {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "description": platform.platform(),
        },
        "edge_ad": _distribution_version("edge-ad") or "not installed",
    }
    report["packages"] = _guard(lambda: _packages(problems), problems, "package versions")
    report["onnxruntime"] = _guard(lambda: _onnxruntime(problems), problems, "onnxruntime")
    report["gpu"] = _guard(lambda: _gpu(report["onnxruntime"], problems), problems, "GPU")
    report["camera"] = _guard(lambda: _camera(problems), problems, "GenTL producers")
    report["permissions"] = _guard(lambda: _permissions(problems), problems, "permissions")
    report["problems"] = problems
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as text for a terminal, one finding a line, problems last.

    >>> print(format_report({"edge_ad": "0.1.0", "problems": []}))  # doctest: +ELLIPSIS
    edge-ad 0.1.0
    ...
    problems: none
    """
    lines: list[str] = []
    python = report.get("python", {})
    plat = report.get("platform", {})
    lines.append(f"edge-ad {report.get('edge_ad', '?')}")
    lines.append(
        f"python {python.get('version', '?')} ({python.get('implementation', '?')}) "
        f"{python.get('executable', '')}".rstrip()
    )
    lines.append(f"platform {plat.get('description', '?')}")

    lines.append("")
    lines.append("packages:")
    for name, version in report.get("packages", {}).items():
        if name != "error":
            lines.append(f"  {name:<12} {version}")

    ort = report.get("onnxruntime", {})
    lines.append("")
    lines.append("onnxruntime providers:")
    if "error" in ort:
        lines.append(f"  error: {ort['error']}")
    for name, available in ort.get("preferred", {}).items():
        lines.append(f"  {'yes' if available else 'no ':<4} {name}")
    others = [p for p in ort.get("available_providers", []) if p not in ort.get("preferred", {})]
    if others:
        lines.append(f"  also: {', '.join(others)}")

    gpu = report.get("gpu", {})
    lines.append("")
    lines.append("GPU:")
    lines.append(f"  {'nvidia-smi':<21}{gpu.get('nvidia_smi') or 'not on PATH'}")
    for line in gpu.get("gpus", []):
        lines.append(f"    {line}")
    if gpu.get("nvidia_smi_error"):
        lines.append(f"    error: {gpu['nvidia_smi_error']}")
    nodes = gpu.get("device_nodes", [])
    lines.append(f"  {'/dev/nvidia*':<21}{', '.join(nodes) if nodes else 'none'}")
    visible = gpu.get("cuda_visible_devices")
    lines.append(f"  {'CUDA_VISIBLE_DEVICES':<21}{'(unset)' if visible is None else repr(visible)}")

    camera = report.get("camera", {})
    lines.append("")
    lines.append(
        f"cameras: harvesters {camera.get('harvesters', '?')}, genicam {camera.get('genicam', '?')}"
    )
    if "error" in camera:
        lines.append(f"  error: {camera['error']}")
    producers = camera.get("producers", [])
    if not producers and "error" not in camera:
        lines.append("  no GenTL producer found")
    for producer in producers:
        lines.append(f"  {producer['origin']:<21} {producer['path']}")

    perms = report.get("permissions", {})
    if perms:
        lines.append("")
        lines.append(f"permissions: user {perms.get('user', '?')}")
        if "groups" in perms:
            lines.append(f"  groups  {', '.join(perms['groups']) or '(none)'}")
        if "dev_shm_writable" in perms:
            lines.append(f"  /dev/shm writable  {_yes_no(perms['dev_shm_writable'])}")

    problems = report.get("problems", [])
    lines.append("")
    if problems:
        lines.append("problems:")
        lines.extend(f"  - {p}" for p in problems)
    else:
        lines.append("problems: none")
    return "\n".join(lines)


def _guard(check: Callable[[], dict[str, Any]], problems: list[str], what: str) -> dict[str, Any]:
    """Run one check; a check that raises becomes a finding, never a crash."""
    try:
        return check()
    except Exception as exc:  # the doctor is what you run when things are broken
        logger.debug("doctor check %s failed", what, exc_info=True)
        problems.append(f"checking {what} failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _module_version(module: str) -> str:
    """The version of an importable module, or 'missing' (with why, if it is broken)."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return "missing"
    except Exception as exc:  # e.g. a shared library that fails to load
        return f"missing (import failed: {type(exc).__name__}: {exc})"
    return str(getattr(mod, "__version__", "unknown version"))


def _packages(problems: list[str]) -> dict[str, Any]:
    versions = {name: _module_version(module) for name, module in _CORE_PACKAGES.items()}
    for name, version in versions.items():
        if version.startswith("missing"):
            problems.append(f"{name} is {version}: reinstall edge-ad (pip install edge-ad)")
    return versions


def _onnxruntime(problems: list[str]) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except Exception as exc:
        # The package check above has already reported it as a problem.
        return {"error": f"onnxruntime cannot be imported: {type(exc).__name__}: {exc}"}
    from edge_sdk.runtime.providers import available_providers

    available = available_providers(ort)
    preferred = {name: name in available for name in PREFERRED_PROVIDERS}
    if not any(preferred[name] for name in _GPU_PROVIDERS):
        problems.append(
            "no GPU execution provider (TensorRT or CUDA) in onnxruntime: "
            "install edge-ad[gpu] on a machine with an NVIDIA GPU"
        )
    if not preferred["CPUExecutionProvider"]:
        problems.append("onnxruntime has no CPUExecutionProvider: its installation is broken")
    return {
        "version": getattr(ort, "__version__", "unknown"),
        "device": ort.get_device(),
        "available_providers": available,
        "preferred": preferred,
    }


def _gpu(ort_report: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    gpus: list[str] = []
    error: str | None = None
    if smi is not None:
        try:
            proc = subprocess.run(
                [
                    smi,
                    "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=_NVIDIA_SMI_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            error = f"nvidia-smi did not answer within {_NVIDIA_SMI_TIMEOUT_S:g} s"
        except OSError as exc:
            error = f"nvidia-smi could not run: {exc}"
        else:
            if proc.returncode == 0:
                gpus = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
            else:
                detail = (proc.stderr or proc.stdout).strip().splitlines()
                error = f"nvidia-smi exited {proc.returncode}" + (
                    f": {detail[-1]}" if detail else ""
                )
    nodes = sorted(glob.glob("/dev/nvidia*"))
    if error:
        problems.append(f"NVIDIA driver problem: {error}")
    has_gpu_provider = any(ort_report.get("preferred", {}).get(p) for p in _GPU_PROVIDERS)
    if has_gpu_provider and not gpus and not nodes:
        problems.append(
            "onnxruntime has a GPU provider but no NVIDIA GPU is visible "
            "(no nvidia-smi output, no /dev/nvidia* device nodes): inference will run on CPU"
        )
    return {
        "nvidia_smi": smi,
        "gpus": gpus,
        "nvidia_smi_error": error,
        "device_nodes": nodes,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _camera(problems: list[str]) -> dict[str, Any]:
    from edge_sdk.sources.producers import find_producers

    harvesters = _distribution_version("harvesters")
    if harvesters is None:
        problems.append("harvesters is not installed: install edge-ad[camera] for GenICam cameras")
    report: dict[str, Any] = {
        "harvesters": harvesters or "missing",
        "genicam": _distribution_version("genicam") or "missing",
        "producers": [],
    }
    producers = find_producers()
    report["producers"] = [{"path": str(p.path), "origin": p.origin} for p in producers]
    if not any(p.origin != "simulator" for p in producers):
        problems.append(
            "no GenTL producer other than the simulator: install the camera vendor's GenTL "
            "producer and add its folder to GENICAM_GENTL64_PATH"
        )
    return report


def _permissions(problems: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    try:
        import getpass

        report["user"] = getpass.getuser()
    except Exception:  # no user name in a bare container: not worth a problem
        report["user"] = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    if sys.platform != "linux":
        return report

    import grp

    gids = set(os.getgroups()) | {os.getegid()}
    names = []
    for gid in sorted(gids):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    report["groups"] = names
    report["is_root"] = os.geteuid() == 0
    # USB3 Vision cameras: vendor udev rules usually grant access to one of these groups.
    camera_groups = [g for g in ("video", "plugdev") if g in names]
    report["camera_groups"] = camera_groups
    if not camera_groups and not report["is_root"]:
        problems.append(
            f"user {report['user']} is in neither the 'video' nor the 'plugdev' group: "
            "USB3 Vision cameras may not be accessible (see the vendor's udev rules)"
        )
    # POSIX shared memory and semaphores live there (multiprocessing, some producers).
    shm_ok = os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK)
    report["dev_shm_writable"] = shm_ok
    if not shm_ok:
        problems.append("/dev/shm is missing or not writable: shared-memory buffers will fail")
    return report


def _yes_no(flag: object) -> str:
    return "yes" if flag else "no"
