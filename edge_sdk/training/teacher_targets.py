"""What a teacher PDN is distilled to: backbone features at the PDN's own output grid,
projected to 384 channels by a PCA fitted on the photos, normalised per channel.

Geometry. The unpadded PDN maps a 256x256 input to 56x56: output ``i`` sees input pixels
``4i .. 4i+32`` (receptive field 33, stride 4), centred at ``4i + 16.5``. The backbone sees
a larger window, the PDN's crop plus :data:`CONTEXT` pixels on every side, so its features
at the crop's border are not zero-padding artefacts. Each backbone layer is sampled
bilinearly at the centres of the PDN's receptive fields (not resized to 56x56, which would
shift the targets by up to 14 px at the borders), at a 3x3 neighbourhood of points
:data:`NEIGHBOUR_PX` apart, so the target describes the patch the PDN sees rather than one
point; the neighbourhood is skipped when the layers alone have 384 channels or more.

The layout (:data:`LAYOUTS`) says what a target describes of its patch:

- ``points`` (the shipped teacher's): every layer at each of the 9 points, concatenated
  (1,584 dimensions for Lite0), so the target also encodes how the patch's parts are arranged;
  the PCA keeps 384 of them.
- ``mean``: every layer averaged over the 9 points (176 dimensions for Lite0), what a
  nearest-patch scorer keeps of a patch. Fewer than 384 dimensions: the projection keeps all
  of them and spreads them over the 384 channels (``pca-rotated`` only). Nearest-patch AUROC
  on the targets was 89.0 % against 87.2 % for ``points`` on magnetic tile, and 65.3 against
  60.6 % on KolektorSDD (``benchmarks/results/teacher_proxy.json``).

The projection is fitted once (covariance accumulated in float64, eigenvectors with a fixed
sign) and stored as one affine map, ``target = A @ feature + b``, that also standardises the
inputs, so every target channel has mean 0 and variance 1 on the photos it was fitted on.
It is one of :data:`PROJECTIONS`:

- ``pca``: the 384 leading principal components, whitened. Every component weighs the same,
  the faint last ones as much as the first.
- ``pca-rotated``: the same 384-dimensional subspace, not whitened, turned by a seeded random
  rotation so that the channels share its variance, then each channel standardised. EfficientAD
  standardises the teacher's channels before the student learns them. On whitened components
  that standardisation weighs every direction alike; on rotated ones it keeps the subspace's
  own geometry. Nearest-patch AUROC on the targets themselves
  (``benchmarks/feature_knn.py --features targets``) was 84.9 % with ``pca`` and 87.1 % with
  ``pca-rotated`` on magnetic tile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from edge_sdk.errors import ConfigError
from edge_sdk.training.backbones import Backbone
from edge_sdk.training.networks import IMAGE_SIZE, TEACHER_CHANNELS

logger = logging.getLogger(__name__)

CONTEXT = 32
WINDOW = IMAGE_SIZE + 2 * CONTEXT
OUT_GRID = 56
PDN_STRIDE, PDN_FIELD = 4, 33
NEIGHBOUR_PX = 8
ProjectionKind = Literal["pca", "pca-rotated"]
PROJECTIONS: tuple[str, ...] = get_args(ProjectionKind)
TargetLayout = Literal["points", "mean"]
LAYOUTS: tuple[str, ...] = get_args(TargetLayout)
_NORMALISATION = {
    "pca": "inputs standardised, outputs whitened (per-channel mean 0, std 1)",
    "pca-rotated": "inputs standardised; the principal subspace unwhitened, turned by a random "
    "rotation (seeded), outputs standardised per channel (mean 0, std 1)",
}
# Every second row and column of the grid is plenty for a covariance, at a quarter the cost.
_FIT_SUBSAMPLE = 2


def sample_points(neighbourhood: bool) -> torch.Tensor:
    """grid_sample coordinates [K,56,56,2] (x, y in -1..1 of the window) of the receptive-field
    centres, once per neighbour offset (K = 9 or 1)."""
    centres = CONTEXT + PDN_STRIDE * torch.arange(OUT_GRID, dtype=torch.float64) + PDN_FIELD / 2
    offsets = (-NEIGHBOUR_PX, 0, NEIGHBOUR_PX) if neighbourhood else (0,)
    grids = []
    for dy in offsets:
        for dx in offsets:
            y, x = torch.meshgrid(centres + dy, centres + dx, indexing="ij")
            grids.append(torch.stack([x, y], dim=-1) * (2.0 / WINDOW) - 1.0)
    return torch.stack(grids).to(torch.float32)


def uses_neighbourhood(backbone: Backbone, layout: TargetLayout = "points") -> bool:
    return layout == "mean" or sum(backbone.channels) < TEACHER_CHANNELS


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"target layout {layout!r}: expected one of {', '.join(LAYOUTS)}")


def raw_features(
    backbone: Backbone,
    window: torch.Tensor,
    points: torch.Tensor,
    *,
    layout: TargetLayout = "points",
) -> torch.Tensor:
    """Backbone features of ``window`` (float RGB 0..1, [N,3,WINDOW,WINDOW]) sampled at
    ``points``: [N, K * sum(channels), 56, 56], or with ``layout="mean"`` each layer averaged
    over the K points: [N, sum(channels), 56, 56]."""
    n = window.shape[0]
    out = []
    for feature in backbone(window):
        feature = feature.float()
        samples = [
            F.grid_sample(
                feature,
                grid.expand(n, -1, -1, -1),
                mode="bilinear",
                padding_mode="border",
                align_corners=False,
            )
            for grid in points.to(feature.device)
        ]
        out.extend([torch.stack(samples).mean(0)] if layout == "mean" else samples)
    return torch.cat(out, dim=1)


def layout_features(backbone: Backbone, window: torch.Tensor, layout: TargetLayout) -> torch.Tensor:
    """:func:`raw_features` at the points ``layout`` samples."""
    points = sample_points(uses_neighbourhood(backbone, layout))
    return raw_features(backbone, window, points, layout=layout)


@dataclass(frozen=True)
class Projection:
    """The affine map from raw features to targets, and how it was fitted."""

    weight: torch.Tensor  # [384, D] float32
    bias: torch.Tensor  # [384] float32
    explained_variance: float  # share of the standardised features' variance kept
    samples: int  # feature vectors the covariance saw
    images: int
    seed: int
    kind: ProjectionKind = "pca"  # checkpoints from before the choice hold "pca"
    layout: TargetLayout = "points"  # and before this one, "points"

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """[N,D,H,W] raw features -> [N,384,H,W] normalised targets."""
        w = self.weight.to(features.device)
        b = self.bias.to(features.device)
        n, _, h, wd = features.shape
        # A batched matmul over the flattened grid: 1.5x faster than the same einsum here.
        out = torch.baddbmm(
            b.view(1, -1, 1).expand(n, -1, 1), w.expand(n, -1, -1), features.flatten(2)
        )
        return out.view(n, -1, h, wd)

    def state(self) -> dict[str, object]:
        return {
            "weight": self.weight,
            "bias": self.bias,
            "explained_variance": self.explained_variance,
            "samples": self.samples,
            "images": self.images,
            "seed": self.seed,
            "kind": self.kind,
            "layout": self.layout,
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Projection:
        return cls(**state)  # type: ignore[arg-type]

    def record(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "layout": self.layout,
            "input_dims": int(self.weight.shape[1]),
            "output_channels": int(self.weight.shape[0]),
            "explained_variance": round(self.explained_variance, 4),
            "fitted_on_images": self.images,
            "fitted_on_vectors": self.samples,
            "seed": self.seed,
            "normalisation": _NORMALISATION[self.kind],
        }


def fit_projection(
    backbone: Backbone,
    windows: Iterable[torch.Tensor],
    *,
    seed: int,
    kind: ProjectionKind = "pca",
    layout: TargetLayout = "points",
    progress: Callable[[int], None] | None = None,
) -> Projection:
    """PCA of the backbone features of ``windows`` (batches of float RGB 0..1) in ``layout``
    to 384 channels, whitened or rotated as ``kind`` says (see the module docstring).

    Deterministic for the same windows and seed. Raises :class:`ConfigError` for an unknown
    ``kind`` or ``layout``, when there are fewer vectors than dimensions, or when the features
    have fewer than 384 dimensions and ``kind`` is ``pca`` (384 whitened components need 384).
    """
    fitted = fit_projections(
        backbone, windows, seed=seed, kinds=(kind,), layout=layout, progress=progress
    )
    return fitted[kind]


def fit_projections(
    backbone: Backbone,
    windows: Iterable[torch.Tensor],
    *,
    seed: int,
    kinds: Iterable[ProjectionKind],
    layout: TargetLayout = "points",
    progress: Callable[[int], None] | None = None,
) -> dict[ProjectionKind, Projection]:
    """:func:`fit_projection` for each of ``kinds``, from one pass over ``windows``."""
    kinds = tuple(kinds)
    for kind in kinds:
        if kind not in PROJECTIONS:
            raise ConfigError(f"projection {kind!r}: expected one of {', '.join(PROJECTIONS)}")
    check_layout(layout)
    points = sample_points(uses_neighbourhood(backbone, layout))
    total: torch.Tensor | None = None
    outer: torch.Tensor | None = None
    count = images = 0
    with torch.no_grad():
        for window in windows:
            f = raw_features(backbone, window, points, layout=layout)
            f = f[..., ::_FIT_SUBSAMPLE, ::_FIT_SUBSAMPLE]
            x = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).to(torch.float64).cpu()
            total = x.sum(0) if total is None else total + x.sum(0)
            outer = x.T @ x if outer is None else outer + x.T @ x
            count += x.shape[0]
            images += window.shape[0]
            if progress is not None:
                progress(images)
    if total is None or outer is None:
        raise ConfigError("no photos to fit the projection on")
    dims = total.numel()
    if count <= dims:
        raise ConfigError(
            f"projection: need more feature vectors than dimensions, found {dims} dimensions "
            f"and {count} vectors (use more photos)"
        )
    if dims < TEACHER_CHANNELS and "pca" in kinds:
        raise ConfigError(
            f"projection pca: needs at least {TEACHER_CHANNELS} feature dimensions for as many "
            f"whitened components, the {layout} layout of {backbone.name} has {dims}; use "
            f"pca-rotated, which spreads them over the {TEACHER_CHANNELS} channels"
        )
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    # A dead channel (ReLU6 that never fires on these photos) has zero variance.
    std = cov.diagonal().clamp_min(1e-12).sqrt()
    corr = cov / torch.outer(std, std)
    eigvals, eigvecs = torch.linalg.eigh(corr)
    order = torch.argsort(eigvals, descending=True)[:TEACHER_CHANNELS]
    vals, vecs = eigvals[order].clamp_min(1e-12), eigvecs[:, order].T  # [384, D]
    # Eigenvectors are defined up to sign; fix it so a refit gives the same teacher targets.
    signs = torch.sign(vecs.gather(1, vecs.abs().argmax(1, keepdim=True)))
    vecs = vecs * signs
    explained = float(vals.sum() / eigvals.clamp_min(0).sum())
    fitted: dict[ProjectionKind, Projection] = {}
    for kind in kinds:
        if kind == "pca":
            out = vecs / vals.sqrt().unsqueeze(1)
        else:
            generator = torch.Generator().manual_seed(seed)
            # Square for 384 components; with fewer dimensions than channels, orthonormal
            # columns embed all of them in the 384 channels.
            q, _ = torch.linalg.qr(
                torch.randn(TEACHER_CHANNELS, len(vals), generator=generator, dtype=torch.float64)
            )
            # Channel c of q @ components has variance sum_k q[c, k]^2 vals[k].
            out = (q @ vecs) / ((q * q) @ vals).sqrt().unsqueeze(1)
        weight = out / std.unsqueeze(0)
        logger.info(
            "projection (%s) %d -> %d channels keeps %.1f %% of the variance (%d vectors, "
            "%d images)",
            kind,
            dims,
            TEACHER_CHANNELS,
            100 * explained,
            count,
            images,
        )
        fitted[kind] = Projection(
            weight=weight.to(torch.float32),
            bias=(-(weight @ mean)).to(torch.float32),
            explained_variance=explained,
            samples=count,
            images=images,
            seed=seed,
            kind=kind,
            layout=layout,
        )
    return fitted


def change_of_targets(source: Projection, target: Projection) -> tuple[torch.Tensor, torch.Tensor]:
    """``(matrix [384,384], shift [384])`` with ``target.apply(f) == matrix @ source.apply(f)
    + shift`` for every feature ``f``: the exact map between two projections of one principal
    subspace (``pca`` and ``pca-rotated`` fitted on the same photos), so a teacher distilled
    to one is re-expressed in the other without distilling (:func:`map_teacher_output`).

    Raises :class:`ConfigError` when the two do not span the same subspace.
    """
    if source.layout != target.layout:
        raise ConfigError(
            f"targets of the {source.layout} and the {target.layout} layout are not one "
            f"subspace: a teacher of one cannot be re-expressed in the other"
        )
    a, b = source.weight.double(), source.bias.double()
    t, c = target.weight.double(), target.bias.double()
    matrix = t @ torch.linalg.pinv(a)
    residual = float((matrix @ a - t).abs().max() / t.abs().max().clamp_min(1e-30))
    if residual > 1e-4:
        raise ConfigError(
            f"projections {source.kind} and {target.kind} do not span the same subspace "
            f"(relative residual {residual:.1e}): fitted on other photos or backbone features?"
        )
    return matrix.to(torch.float32), (c - matrix @ b).to(torch.float32)


def map_teacher_output(pdn: torch.nn.Sequential, matrix: torch.Tensor, shift: torch.Tensor) -> None:
    """Fold ``output -> matrix @ output + shift`` into the PDN's last (linear) convolution."""
    conv = pdn[-1]
    if not isinstance(conv, torch.nn.Conv2d) or conv.bias is None:
        raise ConfigError("the teacher's last layer is not a convolution with a bias")
    with torch.no_grad():
        m = matrix.to(conv.weight.device, torch.float64)
        w = conv.weight.double().reshape(conv.out_channels, -1)
        conv.weight.copy_((m @ w).reshape(conv.weight.shape))
        conv.bias.copy_(m @ conv.bias.double() + shift.to(m.device, torch.float64))


def targets(backbone: Backbone, projection: Projection, window: torch.Tensor) -> torch.Tensor:
    """The distillation targets [N,384,56,56] of ``window`` (float RGB 0..1)."""
    with torch.no_grad():
        return projection.apply(layout_features(backbone, window, projection.layout))
