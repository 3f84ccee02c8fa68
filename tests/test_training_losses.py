"""The EfficientAD losses and the teacher's channel statistics, on hand-built tensors."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the training extra is not installed")

import numpy as np
import torch
from torch import nn

from edge_sdk.training.losses import (
    ChannelStats,
    efficientad_losses,
    hard_feature_loss,
    hard_threshold,
    penalty_loss,
    teacher_channel_stats,
)


def test_hard_threshold_equals_torch_quantile() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 1000, 1001, 384 * 56 * 56):
        d = torch.rand(n, generator=gen)
        assert torch.equal(hard_threshold(d), torch.quantile(d, 0.999)), n


def test_hard_threshold_has_no_size_cap() -> None:
    # torch.quantile refuses more than 2^24 elements (a batch of 16 maps is 19M).
    d = torch.arange(2**24 + 10, dtype=torch.float64)
    n = d.numel()
    assert float(hard_threshold(d)) == pytest.approx(0.999 * (n - 1))


def test_hard_feature_loss_selects_exactly_the_top_elements() -> None:
    # 2000 distances 0..1999 (teacher 0, student sqrt): the 0.999 quantile lies at rank
    # 1997.001, between 1997 and 1998, so exactly 1998 and 1999 are at or above it.
    values = torch.arange(2000, dtype=torch.float32)
    student = values.sqrt().reshape(1, 1, 40, 50)
    teacher = torch.zeros_like(student)
    loss = hard_feature_loss(teacher, student)
    assert float(loss) == pytest.approx((1998 + 1999) / 2)


def test_hard_feature_loss_keeps_ties_at_the_quantile() -> None:
    # All equal: the quantile equals every element, so every element is selected.
    teacher = torch.zeros(1, 2, 10, 10)
    student = torch.full_like(teacher, 3.0)
    assert float(hard_feature_loss(teacher, student)) == pytest.approx(9.0)


def test_hard_feature_loss_gradient_reaches_only_selected_elements() -> None:
    values = torch.arange(2000, dtype=torch.float32).sqrt().reshape(1, 1, 40, 50)
    student = values.clone().requires_grad_(True)
    hard_feature_loss(torch.zeros_like(values), student).backward()
    assert student.grad is not None
    nonzero = student.grad.flatten().nonzero().flatten().tolist()
    assert nonzero == [1998, 1999]


def test_penalty_is_mean_square_of_the_student_output() -> None:
    s = torch.tensor([1.0, -2.0, 3.0, 0.0]).reshape(1, 4, 1, 1)
    assert float(penalty_loss(s)) == pytest.approx((1 + 4 + 9) / 4)


def test_losses_add_up() -> None:
    teacher = torch.zeros(1, 384, 4, 4)
    student = torch.cat([torch.ones(1, 384, 4, 4), torch.full((1, 384, 4, 4), 5.0)], dim=1)
    ae = torch.full((1, 384, 4, 4), 2.0)
    penalty_out = torch.cat([torch.full((1, 384, 4, 4), 3.0), torch.zeros(1, 384, 4, 4)], dim=1)
    losses = efficientad_losses(
        teacher_st=teacher,
        student_st=student[:, :384],
        teacher_ae=teacher,
        autoencoder_ae=ae,
        student_ae=student[:, 384:],
        student_penalty=penalty_out[:, :384],
    )
    values = losses.values()
    assert values["hard"] == pytest.approx(1.0)  # (0 - 1)^2 from the first half
    assert values["penalty"] == pytest.approx(9.0)  # 3^2 from the first half only
    assert values["ae"] == pytest.approx(4.0)  # (0 - 2)^2
    assert values["stae"] == pytest.approx(9.0)  # (2 - 5)^2 from the second half
    assert values["total"] == pytest.approx(23.0)
    without = efficientad_losses(
        teacher_st=teacher,
        student_st=student[:, :384],
        teacher_ae=teacher,
        autoencoder_ae=ae,
        student_ae=student[:, 384:],
    )
    assert "penalty" not in without.values()
    assert without.values()["total"] == pytest.approx(14.0)


def test_channel_stats_match_numpy_over_all_pixels() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 2.0, size=(n, 3, 7, 5)).astype(np.float32) for n in (1, 4, 2)]
    stats = ChannelStats(3)
    for b in batches:
        stats.update(torch.from_numpy(b))
    mean, std = stats.result()
    everything = np.concatenate(batches).transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), everything.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), everything.std(axis=1), rtol=1e-6)


class _Known(nn.Module):
    """A 'teacher' whose 384 channels are the input's first channel times 1..384."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * torch.arange(1, 385, dtype=x.dtype).view(1, -1, 1, 1)


def test_teacher_channel_stats_on_known_data() -> None:
    # Two images, pixels 0 and 2 (mean 1, population std 1): channel c has mean c, std c.
    images = [torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 2.0)]
    mean, std = teacher_channel_stats(_Known(), images)
    expected = torch.arange(1, 385, dtype=torch.float32)
    torch.testing.assert_close(mean, expected)
    torch.testing.assert_close(std, expected)


def test_teacher_channel_stats_equal_the_reference_two_pass() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 384, 3), nn.ReLU())
    images = [torch.randn(1, 3, 12, 12) for _ in range(5)]
    mean, std = teacher_channel_stats(teacher, images)
    # The reference's teacher_normalization: mean of per-image means, then of squared
    # distances to that mean.
    with torch.no_grad():
        outs = [teacher(x) for x in images]
    ref_mean = torch.stack([o.mean(dim=[0, 2, 3]) for o in outs]).mean(dim=0)
    ref_var = torch.stack(
        [((o - ref_mean[None, :, None, None]) ** 2).mean(dim=[0, 2, 3]) for o in outs]
    ).mean(dim=0)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(std, ref_var.sqrt())


def test_module_doctests() -> None:
    import doctest

    from edge_sdk.training import data, losses, recipe

    for module in (data, losses, recipe):
        assert doctest.testmod(module).failed == 0, module.__name__
