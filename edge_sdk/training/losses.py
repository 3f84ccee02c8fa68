"""The EfficientAD losses and the teacher's channel statistics (reference ``efficientad.py``).

All losses are computed in float32 whatever precision the networks ran in: the hard-feature
selection compares values near the 0.999 quantile, which bfloat16's 8-bit mantissa blurs.

>>> d = torch.arange(1000, dtype=torch.float32)
>>> bool(hard_threshold(d, 0.999) == torch.quantile(d, 0.999))
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from edge_sdk.training.networks import TEACHER_CHANNELS

P_HARD = 0.999


def hard_threshold(distance: torch.Tensor, q: float = P_HARD) -> torch.Tensor:
    """The ``q`` quantile of every element of ``distance``, exactly as ``torch.quantile``
    (linear interpolation, rank computed in the tensor's dtype) computes it.

    ``torch.quantile`` sorts the whole tensor and refuses more than 2^24 elements; a top-k
    of the few elements above the rank is ~30x faster on a 1.2M-element map and has no cap.
    """
    flat = distance.detach().reshape(-1)
    n = flat.numel()
    rank = torch.tensor(q, dtype=flat.dtype, device=flat.device) * (n - 1)
    below = int(rank.floor().item())
    above = min(below + 1, n - 1)
    # The n - below largest values, ascending: [0] is the value at `below`, [1] at `above`.
    top = torch.topk(flat, n - below, sorted=True).values.flip(0)
    weight = rank - below
    return torch.lerp(top[0], top[above - below], weight)


def hard_feature_loss(
    teacher_out: torch.Tensor, student_out: torch.Tensor, q: float = P_HARD
) -> torch.Tensor:
    """Mean of the squared differences at or above their ``q`` quantile.

    ``teacher_out`` is the normalised teacher output, ``student_out`` the student's first
    384 channels; only the hardest 0.1 % of elements carry gradient.
    """
    distance = (teacher_out.float() - student_out.float()) ** 2
    return torch.mean(distance[distance >= hard_threshold(distance, q)])


def penalty_loss(student_on_photo: torch.Tensor) -> torch.Tensor:
    """Mean squared student output (first 384 channels) on a generic photo: keeps the student
    from imitating the teacher on images unlike the training parts.
    """
    return torch.mean(student_on_photo.float() ** 2)


@dataclass(frozen=True)
class Losses:
    """One training step's loss terms; ``total`` is what is back-propagated."""

    total: torch.Tensor
    hard: torch.Tensor
    penalty: torch.Tensor | None
    ae: torch.Tensor
    stae: torch.Tensor

    def values(self) -> dict[str, float]:
        """The terms as floats (one device sync)."""
        names = ["total", "hard", "ae", "stae"] + (["penalty"] if self.penalty is not None else [])
        tensors = [getattr(self, name).detach().float() for name in names]
        return dict(zip(names, torch.stack(tensors).tolist(), strict=True))


def efficientad_losses(
    *,
    teacher_st: torch.Tensor,
    student_st: torch.Tensor,
    teacher_ae: torch.Tensor,
    autoencoder_ae: torch.Tensor,
    student_ae: torch.Tensor,
    student_penalty: torch.Tensor | None = None,
) -> Losses:
    """The reference's loss: hard + penalty (student), ae (autoencoder), stae (student's
    second half predicting the autoencoder). Teacher outputs must already be normalised.
    ``student_st`` and ``student_penalty`` are the student's first 384 channels (its teacher
    half), ``student_ae`` its last 384 (its autoencoder half): the only ones the loss reads.
    """
    hard = hard_feature_loss(teacher_st, student_st)
    penalty = penalty_loss(student_penalty) if student_penalty is not None else None
    ae = torch.mean((teacher_ae.float() - autoencoder_ae.float()) ** 2)
    stae = torch.mean((autoencoder_ae.float() - student_ae.float()) ** 2)
    total = hard + ae + stae + (penalty if penalty is not None else 0.0)
    return Losses(total=total, hard=hard, penalty=penalty, ae=ae, stae=stae)


class ChannelStats:
    """Per-channel mean and (population) standard deviation over every pixel of every
    image, accumulated batch by batch in float64 (Chan et al.'s parallel update: one pass,
    no cancellation). Equals the reference's two-pass ``teacher_normalization`` for images
    of one size.
    """

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def update(self, features: torch.Tensor) -> None:
        """Add a batch of features [N,C,H,W]."""
        x = features.detach().to(device="cpu", dtype=torch.float64)
        x = x.transpose(0, 1).reshape(x.shape[1], -1)
        n = x.shape[1]
        mean = x.mean(dim=1)
        m2 = ((x - mean[:, None]) ** 2).sum(dim=1)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float32 [C]."""
        if self.count == 0:
            raise ValueError("no features seen")
        return self.mean.float(), torch.sqrt(self.m2 / self.count).float()


@torch.no_grad()
def teacher_channel_stats(
    teacher: nn.Module,
    batches: Iterable[torch.Tensor],
    keep: Callable[[torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's per-channel output mean and std on the training images.

    ``batches`` yield network input (normalised float [N,3,256,256] on the teacher's device);
    returns float32 [384] tensors on the CPU. ``keep``, when given, receives each batch's
    raw output (the training step reuses them instead of running the teacher again).
    """
    stats = ChannelStats(TEACHER_CHANNELS)
    for batch in batches:
        out = teacher(batch)
        if keep is not None:
            keep(out)
        stats.update(out.float())
    return stats.result()
