"""EfficientAD networks: the patch description networks (PDN) and the autoencoder.

Layer for layer the reference implementation (nelson1425/EfficientAD ``common.py``, with its
default ``padding=False``), so a 256x256 input gives 56x56 maps. The PDNs are plain
``nn.Sequential`` with the reference's layer indices, so the community's published
``teacher_small.pth`` / ``teacher_medium.pth`` state dicts (keys ``"0.weight"``,
``"3.weight"``, ...) load unchanged through :func:`load_teacher_weights`.

>>> import torch
>>> teacher("efficientad-s")(torch.zeros(1, 3, 256, 256)).shape
torch.Size([1, 384, 56, 56])
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from edge_sdk.errors import EdgeADError

Architecture = Literal["efficientad-s", "efficientad-m"]
ARCHITECTURES: tuple[str, ...] = ("efficientad-s", "efficientad-m")
TEACHER_CHANNELS = 384
# The student's first half imitates the teacher, its second half the autoencoder.
STUDENT_CHANNELS = 2 * TEACHER_CHANNELS

# The preprocessing the weights expect (timm keeps this next to the model, and so do we).
IMAGE_SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pdn_small(out_channels: int) -> nn.Sequential:
    """PDN-S: four unpadded convolutions, receptive field 33 px."""
    return nn.Sequential(
        nn.Conv2d(3, 128, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(128, 256, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(256, 256, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, out_channels, kernel_size=4),
    )


def pdn_medium(out_channels: int) -> nn.Sequential:
    """PDN-M: wider PDN-S with two extra 1x1 convolutions, same receptive field."""
    return nn.Sequential(
        nn.Conv2d(3, 256, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(256, 512, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(512, 512, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(512, 512, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.Conv2d(512, out_channels, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
    )


def _decoder_block(size: int) -> list[nn.Module]:
    return [
        # align_corners=False is nn.Upsample's default in the reference; it exports as a
        # half-pixel ONNX Resize.
        nn.Upsample(size=size, mode="bilinear", align_corners=False),
        nn.Conv2d(64, 64, kernel_size=4, stride=1, padding=2),
        nn.ReLU(inplace=True),
        nn.Dropout(0.2),
    ]


class Autoencoder(nn.Module):
    """Strided-conv encoder to a 64x1x1 bottleneck, resize-and-conv decoder to 56x56.

    Its convolutions pad with zeros, so unlike the PDNs it must see the explicitly
    normalised image (input normalisation cannot be folded into its first conv).
    """

    def __init__(self, out_channels: int = TEACHER_CHANNELS) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, kernel_size=4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=8),
        )
        self.decoder = nn.Sequential(
            *(layer for size in (3, 8, 15, 32, 63, 127) for layer in _decoder_block(size)),
            nn.Upsample(size=56, mode="bilinear", align_corners=False),
            nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, out_channels, kernel_size=3, stride=1, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _pdn(arch: str, out_channels: int) -> nn.Sequential:
    if arch == "efficientad-s":
        return pdn_small(out_channels)
    if arch == "efficientad-m":
        return pdn_medium(out_channels)
    raise EdgeADError(f"unknown architecture {arch!r}: expected one of {', '.join(ARCHITECTURES)}")


def teacher(arch: Architecture | str) -> nn.Sequential:
    """The teacher PDN for ``arch`` (384 output channels)."""
    return _pdn(arch, TEACHER_CHANNELS)


def student(arch: Architecture | str) -> nn.Sequential:
    """The student PDN for ``arch`` (768 output channels: teacher half, autoencoder half)."""
    return _pdn(arch, STUDENT_CHANNELS)


def autoencoder() -> Autoencoder:
    """The autoencoder; the same for EfficientAD-S and -M."""
    return Autoencoder(TEACHER_CHANNELS)


def _shape(value: object) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(shape)


def load_teacher_weights(
    module: nn.Module, path_or_state_dict: str | os.PathLike[str] | Mapping[str, torch.Tensor]
) -> nn.Module:
    """Load a teacher state dict (e.g. the published ``teacher_small.pth``) into ``module``.

    Accepts a file or an in-memory state dict; a ``module.`` prefix (left by
    ``nn.DataParallel``) is stripped. Raises :class:`EdgeADError` naming the source and
    the missing, unexpected or mis-shaped keys, because a silently half-loaded teacher
    trains a useless model.

    >>> t = teacher("efficientad-s")
    >>> load_teacher_weights(t, teacher("efficientad-s").state_dict()) is t
    True
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "the given state dict"
        loaded: object = path_or_state_dict
    else:
        source = os.fspath(path_or_state_dict)
        try:
            # weights_only: a .pth from the internet must not be able to run code.
            loaded = torch.load(source, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise EdgeADError(
                f"cannot read teacher weights from {source}: expected a state dict, found "
                f"pickled objects (a whole saved module?); re-save it with "
                f"torch.save(module.state_dict(), path). Loader said: {exc}"
            ) from exc
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            raise EdgeADError(f"cannot read teacher weights from {source}: {exc}") from exc
    if not isinstance(loaded, Mapping):
        raise EdgeADError(
            f"teacher weights in {source}: expected a state dict (a mapping of parameter "
            f"names to tensors), found {type(loaded).__name__}"
        )
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in loaded.items()}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise EdgeADError(
            f"teacher weights in {source} do not fit the network: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    mismatched = [
        f"{k}: expected {tuple(v.shape)}, found {_shape(state[k])}"
        for k, v in expected.items()
        if _shape(state[k]) != tuple(v.shape)
    ]
    if mismatched:
        raise EdgeADError(
            f"teacher weights in {source} have the wrong shapes (another architecture?): "
            + "; ".join(mismatched)
        )
    module.load_state_dict(state)
    return module
