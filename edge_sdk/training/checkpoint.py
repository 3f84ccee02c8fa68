"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the networks, the optimiser, the scheduler, the gradient scaler, the
teacher's channel statistics, the step and the recent losses, plus the run's *fingerprint*:
the options that define the result (data, teacher, steps, seed, recipe). A checkpoint with
another fingerprint is refused rather than silently continued into a different model. No
random generator state is stored: every random draw is a function of ``(seed, step)``.

Written atomically (temporary file, then rename), so an interruption while saving leaves
the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from edge_sdk.errors import ConfigError

logger = logging.getLogger(__name__)

FORMAT = "edge-ad-train-checkpoint/1"
FILE_NAME = "checkpoint.pt"


def checkpoint_folder(checkpoint_dir: str | Path | None, out: str | Path) -> Path:
    """``checkpoint_dir``, or ``OUT.ckpt`` next to the file a run writes."""
    if checkpoint_dir is not None:
        return Path(checkpoint_dir).expanduser().absolute()
    path = Path(out).expanduser().absolute()
    return path.with_name(path.name + ".ckpt")


def checkpoint_path(directory: str | Path) -> Path:
    """The checkpoint file inside a checkpoint folder."""
    return Path(directory) / FILE_NAME


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, state dicts and plain values) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.debug("checkpoint at step %s written to %s", state.get("step"), path)
    return path


def load_checkpoint(
    path: str | Path, *, fingerprint: dict[str, Any], older: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to the run described by ``fingerprint``.

    ``older`` gives fingerprint entries added since checkpoints were first written, with
    the value every run had before (a checkpoint that lacks one had that value). Raises
    :class:`ConfigError` naming the file and every option that differs.
    """
    path = Path(path)
    try:
        # weights_only: a checkpoint is data, and must not be able to run code when loaded.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ConfigError(f"cannot read training checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"{path}: expected a {FORMAT} checkpoint, found {found!r}")
    saved = {**(older or {}), **state.get("fingerprint", {})}
    differences = [
        f"{key}: checkpoint {saved.get(key)!r}, now {fingerprint.get(key)!r}"
        for key in sorted(set(saved) | set(fingerprint))
        if saved.get(key) != fingerprint.get(key)
    ]
    if differences:
        raise ConfigError(
            f"checkpoint {path} belongs to a different training run; continue it with the "
            f"same options, or use another --checkpoint-dir. Differences: " + "; ".join(differences)
        )
    return state
