"""The bundle manifest (`bundle.yaml`): a validated, frozen description of a bundle.

The graph returns raw maps; everything that turns them into a verdict lives here, so a
line is recalibrated by writing a new manifest, never a new graph.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from edge_sdk.runtime.tiling import Tiling

FORMAT_NAME = "edge-ad-bundle"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
FORMAT = f"{FORMAT_NAME}/{FORMAT_MAJOR}.{FORMAT_MINOR}"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Members are plain names or simple relative paths: no traversal, no absolute paths.
_MEMBER = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def check_format(value: str) -> str:
    """Accept any minor version of the major format this edge-ad reads."""
    match = re.fullmatch(rf"{FORMAT_NAME}/(\d+)(?:\.(\d+))?", value)
    if not match:
        raise ValueError(f"expected '{FORMAT_NAME}/<major>.<minor>', got {value!r}")
    if int(match.group(1)) != FORMAT_MAJOR:
        raise ValueError(
            f"bundle format major version {match.group(1)} is not supported by this "
            f"edge-ad (it reads {FORMAT_NAME}/{FORMAT_MAJOR}.x): upgrade edge-ad"
        )
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_member(name: str) -> str:
    if not _MEMBER.match(name) or any(part in {".", ".."} for part in name.split("/")):
        raise ValueError(f"must be a plain relative file name inside the bundle, got {name!r}")
    return name


def _check_sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError(f"must be 64 lowercase hex digits, got {value!r}")
    return value


# The resize modes edge_sdk.runtime.preprocess implements, by the name a manifest gives them.
ResizeMode = Literal["area", "linear", "area_fast"]


class InputSpec(_Frozen):
    """What the graph's input expects. The graph scales and normalises internally."""

    name: str = "image"
    height: int = Field(256, gt=0, le=4096)
    width: int = Field(256, gt=0, le=4096)
    channels: Literal[3] = 3
    color_order: Literal["RGB"] = "RGB"
    dtype: Literal["uint8"] = "uint8"
    layout: Literal["NCHW"] = "NCHW"
    # How frames are resized to the input (edge_sdk/runtime/preprocess.py): only valid with the
    # mode the bundle was trained and calibrated with. "area" (INTER_AREA) is what older
    # bundles saw; "area_fast" is close to it and several times faster on big frames.
    resize: ResizeMode = "area"
    # Regions of interest cut into tiles at the input size (edge_sdk/runtime/tiling.py);
    # None: the whole frame is resized to the input, as bundles without it always were.
    tiling: Tiling | None = None

    @model_validator(mode="after")
    def _tile_is_the_input(self) -> InputSpec:
        if self.tiling is not None and not self.height == self.width == self.tiling.grid.size:
            raise ValueError(
                f"tiling.grid.size {self.tiling.grid.size} must equal the model input "
                f"({self.width}x{self.height})"
            )
        return self


class OutputSpec(_Frozen):
    map_st: str = "map_st"
    map_ae: str = "map_ae"


class _FileRef(_Frozen):
    """A file inside the bundle and the sha256 it must have."""

    file: str = "model.onnx"
    sha256: str

    @field_validator("file")
    @classmethod
    def _member(cls, value: str) -> str:
        return _check_member(value)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        return _check_sha256(value)


class GraphFile(_FileRef):
    """A graph variant (fp16, int8) and the parity figures it passed when written."""

    parity: dict[str, Any] | None = None


class ModelSpec(_FileRef):
    architecture: Literal["efficientad-s", "efficientad-m"]
    input: InputSpec = InputSpec()
    outputs: OutputSpec = OutputSpec()
    variants: dict[str, GraphFile] = Field(default_factory=dict)


class Quantiles(_Frozen):
    """The 0.9 (qa) and 0.995 (qb) quantiles of a raw map on good validation images."""

    qa: float
    qb: float

    @model_validator(mode="after")
    def _ordered(self) -> Quantiles:
        if not (math.isfinite(self.qa) and math.isfinite(self.qb)):
            raise ValueError(f"quantiles must be finite, got qa={self.qa}, qb={self.qb}")
        if self.qb <= self.qa:
            raise ValueError(f"qb must be greater than qa, got qa={self.qa}, qb={self.qb}")
        return self


class MapWeights(_Frozen):
    st: float = Field(0.5, ge=0)
    ae: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> MapWeights:
        if self.st + self.ae <= 0:
            raise ValueError("at least one of the map weights st, ae must be positive")
        return self


class Normalization(_Frozen):
    st: Quantiles
    ae: Quantiles
    weights: MapWeights = MapWeights()
    pad: int = Field(4, ge=0, le=64)
    # The reference code pads with zeros; edge padding keeps border pixels honest.
    pad_mode: Literal["edge", "constant"] = "edge"


class ThresholdPolicy(BaseModel):
    """How the image threshold was chosen: the record that
    :func:`edge_sdk.calibration.thresholds.choose_threshold` writes, read by ``bundle info``,
    ``eval``, ``calibrate`` and ``train``. Every field is optional (a bundle calibrated before
    a field existed lacks it); other keys (legacy and diagnostic ones) are kept as written.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    method: str | None = None
    policy: str | None = None
    chosen_by: str | None = None
    target_false_reject_rate: float | None = None
    # The false-reject rate to expect on new good parts at this threshold (95 %).
    expected_false_reject_rate_95ci: tuple[float, float] | None = None
    images: int | None = None  # good images the threshold was set on
    good_scores: dict[str, Any] = Field(default_factory=dict)
    small_sample: bool = False  # too few good images to resolve the target rate
    at_threshold: dict[str, Any] = Field(default_factory=dict)
    split: dict[str, Any] = Field(default_factory=dict)
    candidates: dict[str, dict[str, Any]] = Field(default_factory=dict)
    notes: tuple[str, ...] = ()


class Threshold(_Frozen):
    image: float
    pixel: float
    policy: ThresholdPolicy = Field(default_factory=ThresholdPolicy)

    @field_serializer("policy")
    def _policy_as_written(self, policy: ThresholdPolicy) -> dict[str, Any]:
        # What the calibration wrote, no more: an older bundle's manifest reads back as it was.
        return policy.model_dump(exclude_unset=True)

    @field_validator("image", "pixel")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value


class Manifest(_Frozen):
    format: str = FORMAT
    name: str = Field(min_length=1)
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    created_by: str = ""
    description: str = ""
    parent: str | None = None
    model: ModelSpec
    normalization: Normalization
    threshold: Threshold
    calibration: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format")
    @classmethod
    def _known_major(cls, value: str) -> str:
        return check_format(value)

    def graph_files(self) -> dict[str, GraphFile]:
        """Every graph in the bundle by variant name; the float32 graph is 'fp32'."""
        graphs = {"fp32": GraphFile(file=self.model.file, sha256=self.model.sha256)}
        graphs.update(self.model.variants)
        return graphs
