"""Turning a camera buffer into the uint8 image the pipeline consumes.

The decoder is chosen from the pixel format the *buffer* reports, never from the one that
was requested: some producers accept a PixelFormat value and keep delivering another.

Output (the `Frame.image` contract): uint8, HxW for mono, HxWx3 in BGR order (OpenCV's)
for colour. Samples deeper than 8 bits are scaled down by a right shift of
``depth - 8`` bits (Mono12 4095 -> 255): cheap, exact on the top bits, and what the model
saw in training when images were saved as 8-bit files.

Three layouts of 10/12-bit samples exist and must not be confused:

- unpacked (``Mono12``, ``BayerRG12``): one little-endian uint16 per sample;
- ``...Packed`` (GigE Vision legacy, ``Mono12Packed``): two samples in three bytes, the
  high 8 bits of each sample in bytes 0 and 2, both low nibbles in byte 1 (sample 0's in
  bits 0-3, sample 1's in bits 4-7); 10-bit: the low 2 bits at bits 0-1 and 4-5;
- ``...p`` (PFNC LSB packing, ``Mono12p``, ``Mono10p``): a little-endian bit stream,
  sample k occupying bits ``k*depth ... k*depth+depth-1``.

Bayer names follow PFNC: ``BayerRG`` means the first row reads R G R G. OpenCV names its
conversions after the 2x2 block starting at the second row and column, so PFNC BayerRG is
``cv2.COLOR_BayerBG2BGR``; the table below holds all four.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from edge_sdk.sources.errors import PixelFormatError

__all__ = [
    "SUPPORTED_FORMATS",
    "PixelLayout",
    "decode",
    "frame_bytes",
    "layout",
    "output_shape",
]

# PFNC first-row pattern -> OpenCV code (OpenCV names the pattern one row and column in).
_BAYER_TO_CV2 = {
    "RG": cv2.COLOR_BayerBG2BGR,
    "GB": cv2.COLOR_BayerGR2BGR,
    "GR": cv2.COLOR_BayerGB2BGR,
    "BG": cv2.COLOR_BayerRG2BGR,
}
_COLOUR_TO_CV2 = {
    "RGB8": cv2.COLOR_RGB2BGR,
    "RGBa8": cv2.COLOR_RGBA2BGR,
    "BGRa8": cv2.COLOR_BGRA2BGR,
}
_CHANNELS = {"RGB8": 3, "BGR8": 3, "RGBa8": 4, "BGRa8": 4}
_MONO_OR_BAYER = re.compile(r"^(Mono|Bayer(?:RG|GB|GR|BG))(8|10|12|14|16)(Packed|p)?$")


@dataclass(frozen=True)
class PixelLayout:
    """How one pixel format lies in memory.

    `kind` is "mono", "bayer" or "colour"; `packing` is "" (whole bytes), "Packed" (GigE
    Vision legacy) or "p" (PFNC LSB bit stream); `pattern` is the PFNC Bayer first row.
    """

    name: str
    kind: str
    depth: int
    packing: str = ""
    pattern: str = ""
    channels: int = 1

    @property
    def bits_per_sample(self) -> int:
        """Bits one sample occupies in memory (GigE legacy packing: 12 for 10-bit too)."""
        if self.packing == "Packed":
            return 12
        if self.packing == "p":
            return self.depth
        return 8 if self.depth == 8 else 16

    @property
    def group_bytes(self) -> int:
        """Bytes of the smallest whole group of packed samples (1 or 2 when unpacked)."""
        if self.packing == "Packed" or (self.packing == "p" and self.depth == 12):
            return 3
        if self.packing == "p":
            return 5
        return self.bits_per_sample // 8

    def bytes_per_row(self, width: int) -> int:
        """Bytes one row of `width` pixels occupies, without row padding."""
        return (width * self.channels * self.bits_per_sample + 7) // 8


def layout(pixel_format: str) -> PixelLayout:
    """The memory layout of a PFNC pixel format name, or `PixelFormatError` if unsupported.

    >>> layout("Mono12p").packing, layout("BayerRG8").pattern
    ('p', 'RG')
    """
    if pixel_format in _CHANNELS:
        return PixelLayout(pixel_format, "colour", 8, channels=_CHANNELS[pixel_format])
    match = _MONO_OR_BAYER.match(pixel_format)
    if match is not None:
        family, depth_text, packing = match.group(1), match.group(2), match.group(3) or ""
        depth = int(depth_text)
        # Packed layouts are defined here for 10 and 12 bits only.
        if not (packing and depth not in (10, 12)):
            if family == "Mono":
                return PixelLayout(pixel_format, "mono", depth, packing)
            return PixelLayout(pixel_format, "bayer", depth, packing, pattern=family[5:])
    raise PixelFormatError(
        f"pixel format {pixel_format!r} is not supported; expected one of "
        f"{', '.join(SUPPORTED_FORMATS)} (set the camera's PixelFormat to one of these)"
    )


def frame_bytes(pixel_format: str, width: int, height: int, *, padding_x: int = 0) -> int:
    """Bytes a frame of this format and size occupies (rows padded by `padding_x` bytes).

    Packed formats without row padding are one bit stream over the whole frame, so an odd
    width does not round each row up to whole bytes.

    >>> frame_bytes("Mono12p", 3, 2), frame_bytes("Mono8", 3, 2, padding_x=1)
    (9, 8)
    """
    lay = layout(pixel_format)
    if lay.packing and padding_x == 0:
        return (width * height * lay.bits_per_sample + 7) // 8
    return (lay.bytes_per_row(width) + padding_x) * height


def output_shape(pixel_format: str, width: int, height: int) -> tuple[int, ...]:
    """The shape `decode` returns: (H, W) for mono, (H, W, 3) for colour and Bayer."""
    return (height, width) if layout(pixel_format).kind == "mono" else (height, width, 3)


def decode(
    data: np.ndarray | bytes | memoryview,
    pixel_format: str,
    width: int,
    height: int,
    *,
    padding_x: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode one frame into a uint8 image (HxW mono, HxWx3 BGR) that owns its memory.

    `data` holds at least the frame's bytes (extra bytes at the end are ignored), rows
    padded by `padding_x` bytes. The result never shares memory with `data`, so the
    driver buffer can be handed back as soon as this returns: this is the one copy.
    `out` (C-contiguous uint8 of `output_shape`) receives the image instead of new memory.

    >>> raw = np.array([0x12, 0x34, 0x56], np.uint8)   # Mono12p: 0x412, 0x563
    >>> decode(raw, "Mono12p", 2, 1).tolist()          # shifted down by 4 bits
    [[65, 86]]
    """
    lay = layout(pixel_format)
    flat = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    flat = flat.reshape(-1).view(np.uint8)
    needed = frame_bytes(pixel_format, width, height, padding_x=padding_x)
    if flat.size < needed:
        raise PixelFormatError(
            f"{pixel_format} frame of {width}x{height} (+{padding_x} bytes row padding) needs "
            f"{needed} bytes; the buffer holds {flat.size}"
        )
    shape = output_shape(pixel_format, width, height)
    if out is not None and (
        out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous
    ):
        raise ValueError(f"out must be C-contiguous uint8 {shape}, got {out.dtype} {out.shape}")
    if lay.packing:
        grey = _unpack(_packed_stream(flat, lay, width, height, padding_x), lay, width * height)
        grey = grey.reshape(height, width)
    else:
        row_bytes = lay.bytes_per_row(width)
        rows = flat[:needed].reshape(height, row_bytes + padding_x)[:, :row_bytes]
        if lay.kind == "colour":
            pixels = rows.reshape(height, width, lay.channels)
            if pixel_format == "BGR8":  # already the pipeline's order: a plain copy
                return _copy(pixels, out)
            return cv2.cvtColor(pixels, _COLOUR_TO_CV2[pixel_format], dst=out)
        if lay.depth == 8:
            grey = rows  # still the driver's memory: the copy comes below
        else:
            # Little-endian uint16 per sample, as GenICam specifies; the shift makes a copy.
            grey = (rows.view("<u2") >> (lay.depth - 8)).astype(np.uint8)
    if lay.kind == "bayer":
        # cvtColor reads `grey` and writes the image: that is the copy for 8-bit Bayer.
        return cv2.cvtColor(grey, _BAYER_TO_CV2[lay.pattern], dst=out)
    if lay.depth == 8 and not lay.packing:
        return _copy(grey, out)
    return grey if out is None else _copy(grey, out)


def _copy(src: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.array(src, order="C")
    np.copyto(out, src)
    return out


def _packed_stream(
    flat: np.ndarray, lay: PixelLayout, width: int, height: int, padding_x: int
) -> np.ndarray:
    """The frame's packed samples as one contiguous byte stream (row padding removed)."""
    if padding_x == 0:
        return flat[: frame_bytes(lay.name, width, height)]
    if (width * lay.bits_per_sample) % (8 * lay.group_bytes) != 0:
        raise PixelFormatError(
            f"{lay.name} rows of {width} pixels do not end on a whole packing group, so row "
            f"padding ({padding_x} bytes) is ambiguous; choose a width that is a multiple of "
            f"{lay.group_bytes * 8 // lay.bits_per_sample}"
        )
    row_bytes = lay.bytes_per_row(width)
    rows = flat[: (row_bytes + padding_x) * height].reshape(height, row_bytes + padding_x)
    return np.ascontiguousarray(rows[:, :row_bytes]).reshape(-1)


def _unpack(stream: np.ndarray, lay: PixelLayout, n: int) -> np.ndarray:
    """`n` packed samples from `stream`, scaled to uint8, in a new array."""
    group = lay.group_bytes
    per_group = group * 8 // lay.bits_per_sample
    groups_n = -(-n // per_group)
    if stream.size < groups_n * group:  # the last group is cut short: pad it with zeros
        stream = np.concatenate([stream, np.zeros(groups_n * group - stream.size, np.uint8)])
    g = stream[: groups_n * group].reshape(groups_n, group)
    if lay.packing == "Packed":
        # GigE legacy: bytes 0 and 2 are the two samples' high 8 bits, which is exactly
        # what the shift to 8 bits keeps (for 10 and 12 bits alike).
        out8 = np.empty((groups_n, 2), np.uint8)
        out8[:, 0] = g[:, 0]
        out8[:, 1] = g[:, 2]
        return out8.reshape(-1)[:n]
    w = g.astype(np.uint16)
    out = np.empty((groups_n, per_group), np.uint16)
    if lay.depth == 12:  # two samples in three bytes, least significant bits first
        out[:, 0] = w[:, 0] | ((w[:, 1] & 0x0F) << 8)
        out[:, 1] = (w[:, 1] >> 4) | (w[:, 2] << 4)
    else:  # 10 bits: four samples in five bytes
        out[:, 0] = w[:, 0] | ((w[:, 1] & 0x03) << 8)
        out[:, 1] = (w[:, 1] >> 2) | ((w[:, 2] & 0x0F) << 6)
        out[:, 2] = (w[:, 2] >> 4) | ((w[:, 3] & 0x3F) << 4)
        out[:, 3] = (w[:, 3] >> 6) | (w[:, 4] << 2)
    return (out.reshape(-1)[:n] >> (lay.depth - 8)).astype(np.uint8)


SUPPORTED_FORMATS: tuple[str, ...] = (
    "Mono8",
    "Mono10",
    "Mono10Packed",
    "Mono10p",
    "Mono12",
    "Mono12Packed",
    "Mono12p",
    "Mono14",
    "Mono16",
    "RGB8",
    "BGR8",
    "RGBa8",
    "BGRa8",
    *(
        f"Bayer{p}{d}{k}"
        for p in ("RG", "GB", "GR", "BG")
        for d in (8, 10, 12)
        for k in (("",) if d == 8 else ("", "Packed", "p"))
    ),
)
