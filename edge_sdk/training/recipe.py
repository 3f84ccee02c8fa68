"""What a training run is asked to do: its configuration, the recipe's constants, where the
teacher comes from, the device and precision, and the progress reports it sends.

>>> cfg = TrainConfig(data=Path("parts"), out=Path("parts.bundle"), teacher="random", steps=10)
>>> cfg.checkpoint_folder().name
'parts.bundle.ckpt'
>>> resolve_teacher("random", "efficientad-s").path is None
True
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from edge_sdk.errors import ConfigError
from edge_sdk.runtime.bundle import file_sha256
from edge_sdk.runtime.manifest import MapWeights, ResizeMode
from edge_sdk.runtime.tiling import Tiling
from edge_sdk.training.checkpoint import checkpoint_folder
from edge_sdk.training.networks import ARCHITECTURES

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The project's own distilled teachers (issue 3, item 1); a source checkout carries them in
# models/. Resolved from this file, never from the working directory.
_TEACHER_FILES = {
    "efficientad-s": "teacher_small_lite0.pth",
    "efficientad-m": "teacher_medium_lite0.pth",
}
# A checkout (or editable install) keeps them in models/; a wheel installs models/ to
# <prefix>/share/edge-ad/models (pyproject's data-files).
MODEL_FOLDERS = (REPO_ROOT / "models", Path(sys.prefix) / "share" / "edge-ad" / "models")


def _default_teacher(name: str) -> Path:
    for folder in MODEL_FOLDERS:
        if (folder / name).is_file():
            return folder / name
    return MODEL_FOLDERS[0] / name


DEFAULT_TEACHER: dict[str, Path] = {a: _default_teacher(f) for a, f in _TEACHER_FILES.items()}
RANDOM_TEACHER = "random"
LEARNING_RATE = 1e-4
WEIGHT_DECAY = 1e-5
LR_DECAY_AT = 0.95
LR_DECAY_FACTOR = 0.1
# How images are resized to the model input in training and calibration, and so the
# model.input.resize of the bundles written. "area_fast" is within a fraction of a grey
# level of INTER_AREA ("area", what runs before it saw) on average and about 6x faster on
# a 5 MP frame (benchmarks/resize.py); below 512 px a side the two are identical.
INPUT_RESIZE: ResizeMode = "area_fast"

Phase = Literal["statistics", "training", "export"]


@dataclass(frozen=True)
class TrainConfig:
    """What to train. ``teacher`` is a weights file, ``"random"`` (a seeded random teacher:
    weak, for baselines and demos) or None for :data:`DEFAULT_TEACHER`.
    """

    data: Path
    out: Path
    architecture: str = "efficientad-s"
    teacher: str | Path | None = None
    steps: int = 70_000
    penalty: Path | None = None
    seed: int = 0
    batch_size: int = 1
    # Adam's learning rate (the reference's 1e-4 unless a measured reason says otherwise).
    lr: float = LEARNING_RATE
    device: str = "auto"
    # None: bfloat16 autocast where the CPU runs it natively (about 2x faster a step), as
    # on CUDA; False forces float32, True bfloat16 even where it is emulated.
    bf16: bool | None = None
    val_fraction: float = 0.1
    target_frr: float = 0.01
    # The (student, autoencoder) maps' weights in a part's map; None: the reference's 0.5, 0.5.
    map_weights: tuple[float, float] | None = None
    resize: ResizeMode = INPUT_RESIZE
    # Regions and tiles at native resolution (edge_sdk/runtime/tiling.py); None: each
    # image squeezed into the model input.
    tiling: Tiling | None = None
    name: str | None = None
    description: str = ""
    dataset_label: str | None = None  # what the manifest names as the dataset; default: data
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 1000
    resume: bool = False
    overwrite: bool = False
    # Add the int8 variant (calibrated and parity-checked on up to 64 training images).
    int8: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no run can use."""
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture {self.architecture!r}: expected one of {', '.join(ARCHITECTURES)}"
            )
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected at least 1, found {getattr(self, name)}")
        if not 0.0 < self.lr < 1.0:
            raise ConfigError(f"learning rate: expected a value in (0, 1), found {self.lr}")
        if not 0.0 < self.target_frr < 1.0:
            raise ConfigError(f"target false-reject rate: expected (0, 1), found {self.target_frr}")
        if self.map_weights is not None:
            st, ae = self.map_weights
            try:  # the manifest's own rule
                MapWeights(st=st, ae=ae)
            except ValueError:
                raise ConfigError(
                    f"map weights: expected two weights >= 0, not both 0, found {st}, {ae}"
                ) from None
        if self.resize not in get_args(ResizeMode):
            raise ConfigError(
                f"resize: expected one of {', '.join(get_args(ResizeMode))}, found {self.resize!r}"
            )

    def checkpoint_folder(self) -> Path:
        """Where checkpoints go: ``checkpoint_dir``, or ``OUT.ckpt`` next to the bundle."""
        return checkpoint_folder(self.checkpoint_dir, self.out)


@dataclass(frozen=True)
class Progress:
    """A progress report: ``step`` of ``total`` done in ``phase``; losses averaged over the
    last steps; ``eta_s`` None until a rate is known.
    """

    phase: Phase
    step: int
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    steps_per_s: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0


ProgressCallback = Callable[[Progress], None]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``checkpoint`` holds the state after ``step`` steps (None
    when nothing could be saved). Still a KeyboardInterrupt for whoever catches that.
    """

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"training interrupted after step {step}")
        self.step = step
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class TeacherSource:
    """Where the teacher's weights came from (recorded in the manifest)."""

    path: Path | None  # None: random init from the seed
    sha256: str | None

    def record(self, seed: int) -> dict[str, Any]:
        if self.path is None:
            return {"source": RANDOM_TEACHER, "seed": seed}
        return {"source": str(self.path), "sha256": self.sha256}


def resolve_teacher(spec: str | Path | None, architecture: str) -> TeacherSource:
    """The teacher to use: a file, ``"random"``, or the default for ``architecture``."""
    if spec is not None and str(spec) == RANDOM_TEACHER:
        return TeacherSource(None, None)
    if spec is None:
        path = DEFAULT_TEACHER.get(architecture)
        if path is None or not path.is_file():
            raise ConfigError(
                f"no default teacher for {architecture} (looked in "
                f"{' and '.join(str(f) for f in MODEL_FOLDERS)}): pass --teacher "
                f"FILE (e.g. the community's teacher_small.pth / teacher_medium.pth, or one "
                f"from edge-ad pretrain-teacher), or --teacher random (weak: for baselines)"
            )
    else:
        path = Path(spec).expanduser().absolute()
        if not path.is_file():
            raise ConfigError(f"teacher weights {path}: no such file")
    return TeacherSource(path, file_sha256(path))


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this torch build or machine has no CUDA")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device {device!r}: expected auto, cpu or cuda")
    return torch.device(device)


def adam(
    params: Iterable[torch.nn.Parameter], lr: float, *, fused: bool = True
) -> torch.optim.Adam:
    """The recipe's Adam (weight decay 1e-5). ``fused``: one kernel over every parameter
    instead of a dozen passes of ``foreach`` ops, the same update; on a 2-core AMX Xeon it
    took 9 ms a step for EfficientAD-S's student and autoencoder instead of 23 to 36 ms
    (``benchmarks/train_step.py`` times the step both ways)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=WEIGHT_DECAY, fused=fused)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX512-BF16/AMX): then ``bf16`` cuts
    the CPU step time severalfold; without it bf16 is emulated and slower.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Precision:
    """How the networks run: autocast dtype (None: float32) and whether losses are scaled."""

    autocast_dtype: torch.dtype | None
    scaler: bool  # fp16 needs loss scaling; bf16 has float32's exponent range
    label: str


def precision_for(device: torch.device, bf16: bool | None) -> Precision:
    """``bf16`` None: bfloat16 on a CPU that runs it natively, float32 on one that does not."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, False, "bf16 autocast")
        return Precision(torch.float16, True, "fp16 autocast, loss scaling")
    native = cpu_has_fast_bf16()
    if bf16 and not native:
        logger.warning("bf16 requested, but this CPU has no native bfloat16: it will be slow")
    if bf16 or (bf16 is None and native):
        return Precision(torch.bfloat16, False, "bf16 autocast")
    return Precision(None, False, "fp32")
