"""A distilled teacher on disk: the float16 state dict in the reference's key layout and its
record, ``FILE.json`` beside it (what made it, on which hardware, and the file's sha256)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["TeacherResult", "hardware", "write_teacher"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherResult:
    """The teacher file written and the record in its sidecar."""

    path: Path
    sidecar: Path
    record: dict[str, Any]


def write_teacher(
    pdn: torch.nn.Module, out: str | os.PathLike[str], record: dict[str, Any]
) -> TeacherResult:
    """Save ``pdn``'s state dict as float16 to ``out`` (atomically) and ``OUT.json`` beside it,
    with the file's sha256 added to ``record``."""
    path = Path(out).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Plain tensors in the reference's key layout, contiguous (channels_last would be saved
    # as strided storage that other loaders need not expect).
    state = {
        k: v.detach().cpu().contiguous().to(torch.float16) for k, v in pdn.state_dict().items()
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    record = {**record, "file": path.name, "sha256": digest, "dtype": "float16"}
    sidecar = path.with_name(path.name + ".json")
    sidecar.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote teacher %s (%d bytes) and %s", path, path.stat().st_size, sidecar.name)
    return TeacherResult(path=path, sidecar=sidecar, record=record)


def hardware(device: torch.device) -> str:
    """The processor that ran the steps, by name (``platform.processor()`` is often empty)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"
