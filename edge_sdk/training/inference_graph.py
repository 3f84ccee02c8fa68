"""The inference graph: uint8 RGB images in, the two raw EfficientAD maps out.

It is what the bundle's ``model.onnx`` holds. Constants are folded into weights wherever
that is exact, so the runtime does no preprocessing beyond resizing:

- the uint8 -> [0, 1] scaling and the ImageNet normalisation go into the first conv of the
  teacher and the student. Exact because the PDN convs do not pad: every output pixel sees
  only real input pixels, each one an affine function of the raw value;
- the teacher's per-channel mean/std go into the teacher's last conv (an affine map after a
  linear one);
- the autoencoder's convs pad with zeros, and a zero in normalised space is not a zero in
  raw space, so it gets the explicitly normalised image.

:func:`reference_maps` is the unfolded computation (the reference code's ``predict`` before
quantile normalisation); the tests hold the two equal.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from edge_sdk.errors import EdgeADError
from edge_sdk.training.networks import IMAGENET_MEAN, IMAGENET_STD, TEACHER_CHANNELS


def normalise(image: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [N,3,H,W] (0..255) -> float32 scaled to 0..1 and ImageNet-normalised.

    >>> normalise(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)).flatten().round(decimals=3)
    tensor([2.2490, 2.4290, 2.6400])
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (image.to(torch.float32) / 255.0 - mean) / std


def _channels(stat: torch.Tensor, name: str) -> torch.Tensor:
    flat = stat.detach().reshape(-1).to(torch.float64)
    if flat.numel() != TEACHER_CHANNELS:
        raise EdgeADError(
            f"{name}: expected {TEACHER_CHANNELS} values (shape (1,{TEACHER_CHANNELS},1,1) "
            f"or ({TEACHER_CHANNELS},)), found shape {tuple(stat.shape)}"
        )
    return flat


def _convs(pdn: nn.Module) -> list[nn.Conv2d]:
    return [m for m in pdn.modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def _fold_input_normalisation(pdn: nn.Module) -> None:
    """Make the first conv take raw 0..255 values: w' = w/(255 std_c), b' = b - Σ w mean_c/std_c."""
    conv = _convs(pdn)[0]
    if conv.padding not in ((0, 0), 0) or conv.in_channels != 3:
        # With padding the border taps would see a raw zero instead of a normalised one.
        raise EdgeADError(f"cannot fold the input normalisation into {conv}: it pads")
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    weight = conv.weight.to(torch.float64)
    bias = conv.bias.to(torch.float64) if conv.bias is not None else weight.new_zeros(len(weight))
    conv.weight.copy_(weight / (255.0 * std))
    new_bias = bias - (weight * (mean / std)).sum(dim=(1, 2, 3))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))
    else:
        conv.bias.copy_(new_bias)


@torch.no_grad()
def _fold_output_standardisation(pdn: nn.Sequential, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make the last conv emit (y - mean)/std: w' = w/std, b' = (b - mean)/std."""
    conv = pdn[-1]
    if not isinstance(conv, nn.Conv2d) or conv.bias is None:
        # Anything after the conv (a ReLU) would not commute with the affine map.
        raise EdgeADError(f"cannot fold the teacher mean/std: the last layer is {conv}")
    weight = conv.weight.to(torch.float64)
    conv.weight.copy_(weight / std.view(-1, 1, 1, 1))
    conv.bias.copy_((conv.bias.to(torch.float64) - mean) / std)


def _channel_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # d * d and ReduceSum rather than pow and ReduceMean: ReduceMean moved its axes from an
    # attribute to an input in opset 18, and onnx's 18 -> 17 converter gets that node wrong.
    d = a - b
    return torch.sum(d * d, dim=1, keepdim=True) * (1.0 / d.shape[1])


class InferenceGraph(nn.Module):
    """Teacher, student and autoencoder with the constants folded in; always in eval mode.

    ``forward(image)`` takes uint8 RGB [N,3,H,W] and returns ``(map_st, map_ae)``, float32
    [N,1,h,w] (56x56 at a 256x256 input). The modules passed in are copied, never changed.
    """

    input_shift: torch.Tensor
    input_scale: torch.Tensor

    def __init__(
        self,
        teacher: nn.Sequential,
        student: nn.Sequential,
        autoencoder: nn.Module,
        teacher_mean: torch.Tensor,
        teacher_std: torch.Tensor,
    ) -> None:
        super().__init__()
        mean = _channels(teacher_mean, "teacher_mean")
        std = _channels(teacher_std, "teacher_std")
        self.teacher = copy.deepcopy(teacher).float()
        _fold_input_normalisation(self.teacher)
        _fold_output_standardisation(self.teacher, mean, std)
        self.student = copy.deepcopy(student).float()
        _fold_input_normalisation(self.student)
        self.autoencoder = copy.deepcopy(autoencoder).float()
        # (x - 255 mean) * 1/(255 std) == (x/255 - mean)/std, as one subtract and one multiply.
        shift = 255.0 * torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
        scale = 1.0 / (255.0 * torch.tensor(IMAGENET_STD, dtype=torch.float64))
        self.register_buffer("input_shift", shift.float().view(1, 3, 1, 1))
        self.register_buffer("input_scale", scale.float().view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InferenceGraph:
        # Dropout in the autoencoder must never be live here, whoever calls .train().
        return super().train(False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.to(torch.float32)
        t = self.teacher(x)
        s = self.student(x)
        a = self.autoencoder((x - self.input_shift) * self.input_scale)
        return _channel_mse(t, s[:, :TEACHER_CHANNELS]), _channel_mse(a, s[:, TEACHER_CHANNELS:])


@contextmanager
def _evaluating(*modules: nn.Module) -> Iterator[None]:
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


@torch.no_grad()
def reference_maps(
    teacher: nn.Module,
    student: nn.Module,
    autoencoder: nn.Module,
    teacher_mean: torch.Tensor,
    teacher_std: torch.Tensor,
    image_float_normalised: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unfolded maps, as the reference code's ``predict`` computes them.

    Takes the already ImageNet-normalised float image (see :func:`normalise`); runs the
    modules in eval mode and restores their mode afterwards.
    """
    mean = teacher_mean.reshape(1, -1, 1, 1)
    std = teacher_std.reshape(1, -1, 1, 1)
    with _evaluating(teacher, student, autoencoder):
        t = (teacher(image_float_normalised) - mean) / std
        s = student(image_float_normalised)
        a = autoencoder(image_float_normalised)
    map_st = torch.mean((t - s[:, :TEACHER_CHANNELS]) ** 2, dim=1, keepdim=True)
    map_ae = torch.mean((a - s[:, TEACHER_CHANNELS:]) ** 2, dim=1, keepdim=True)
    return map_st, map_ae
