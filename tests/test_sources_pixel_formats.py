"""Pixel-format decoding against reference conversions built independently in the test."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_sdk.sources.errors import PixelFormatError
from edge_sdk.sources.pixel_formats import (
    SUPPORTED_FORMATS,
    decode,
    frame_bytes,
    layout,
    output_shape,
)
from edge_sdk.sources.pool import ArrayPool

RNG = np.random.default_rng(7)
H, W = 6, 8  # W a multiple of 4 so every packing fills whole groups per row


def pack_lsb(values: np.ndarray, depth: int) -> np.ndarray:
    """PFNC "p" packing: one little-endian bit stream, written with Python integers."""
    stream = 0
    for k, v in enumerate(values.reshape(-1).tolist()):
        stream |= int(v) << (k * depth)
    n_bytes = (values.size * depth + 7) // 8
    return np.frombuffer(stream.to_bytes(n_bytes, "little"), np.uint8).copy()


def pack_gige(values: np.ndarray, depth: int) -> np.ndarray:
    """GigE Vision legacy ...Packed: per pair, high 8 bits in bytes 0 and 2, low bits in 1."""
    flat = values.reshape(-1).astype(np.int64)
    if flat.size % 2:
        flat = np.append(flat, 0)
    low_bits = depth - 8
    out = []
    for a, b in flat.reshape(-1, 2).tolist():
        mask = (1 << low_bits) - 1
        out += [a >> low_bits, (a & mask) | ((b & mask) << 4), b >> low_bits]
    return np.array(out, np.uint8)


def samples(depth: int, shape: tuple[int, ...] = (H, W)) -> np.ndarray:
    return RNG.integers(0, 1 << depth, size=shape, dtype=np.uint16)


def raw_for(values: np.ndarray, depth: int, packing: str) -> np.ndarray:
    if depth == 8:
        return values.astype(np.uint8).reshape(-1)
    if packing == "":
        return values.astype("<u2").reshape(-1).view(np.uint8)
    return pack_gige(values, depth) if packing == "Packed" else pack_lsb(values, depth)


def mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """A CFA image: `pattern` is the PFNC first row then second row (RG -> R G / G B)."""
    second = {"RG": "GB", "GB": "RG", "GR": "BG", "BG": "GR"}[pattern]
    channel = {"B": 0, "G": 1, "R": 2}
    out = np.empty(bgr.shape[:2], bgr.dtype)
    for dy, row in enumerate((pattern, second)):
        for dx, colour in enumerate(row):
            out[dy::2, dx::2] = bgr[dy::2, dx::2, channel[colour]]
    return out


def test_known_vectors_tell_mono12p_from_mono12packed() -> None:
    # Pixels 0x123 and 0x456, packed by hand from the two specifications.
    pfnc_p = np.array([0x23, 0x61, 0x45], np.uint8)
    gige = np.array([0x12, 0x63, 0x45], np.uint8)
    assert decode(pfnc_p, "Mono12p", 2, 1).tolist() == [[0x12, 0x45]]
    assert decode(gige, "Mono12Packed", 2, 1).tolist() == [[0x12, 0x45]]
    # Read with the other scheme, the same bytes give other pixels: the schemes differ.
    assert decode(pfnc_p, "Mono12Packed", 2, 1).tolist() != [[0x12, 0x45]]
    assert decode(gige, "Mono12p", 2, 1).tolist() != [[0x12, 0x45]]


@pytest.mark.parametrize(
    ("name", "depth", "packing"),
    [
        ("Mono8", 8, ""),
        ("Mono10", 10, ""),
        ("Mono12", 12, ""),
        ("Mono14", 14, ""),
        ("Mono16", 16, ""),
        ("Mono10Packed", 10, "Packed"),
        ("Mono12Packed", 12, "Packed"),
        ("Mono10p", 10, "p"),
        ("Mono12p", 12, "p"),
    ],
)
def test_mono_formats_scale_to_uint8_by_shifting(name: str, depth: int, packing: str) -> None:
    values = samples(depth)
    raw = raw_for(values, depth, packing)
    assert raw.size == frame_bytes(name, W, H)
    image = decode(raw, name, W, H)
    assert image.dtype == np.uint8 and image.shape == (H, W)
    np.testing.assert_array_equal(image, (values >> (depth - 8)).astype(np.uint8))
    assert not np.shares_memory(image, raw)


@pytest.mark.parametrize("name", ["Mono10p", "Mono12p", "Mono12Packed"])
def test_packed_formats_with_odd_width_are_one_stream(name: str) -> None:
    lay = layout(name)
    values = samples(lay.depth, (3, 5))
    raw = raw_for(values, lay.depth, lay.packing)
    np.testing.assert_array_equal(decode(raw, name, 5, 3), values >> (lay.depth - 8))


@pytest.mark.parametrize(
    ("name", "to_raw"),
    [
        ("BGR8", lambda bgr: bgr),
        ("RGB8", lambda bgr: bgr[:, :, ::-1]),
        ("RGBa8", lambda bgr: np.dstack([bgr[:, :, ::-1], RNG.integers(0, 256, bgr.shape[:2])])),
        ("BGRa8", lambda bgr: np.dstack([bgr, np.zeros(bgr.shape[:2])])),  # alpha 0, as viky
    ],
)
def test_colour_formats_come_out_bgr_without_alpha(name: str, to_raw: object) -> None:
    bgr = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    raw = np.ascontiguousarray(to_raw(bgr)).astype(np.uint8)  # type: ignore[operator]
    image = decode(raw.reshape(-1), name, W, H)
    assert image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, bgr)
    assert not np.shares_memory(image, raw)


@pytest.mark.parametrize("pattern", ["RG", "GB", "GR", "BG"])
@pytest.mark.parametrize(
    ("depth", "packing"), [(8, ""), (10, ""), (12, ""), (10, "p"), (12, "p"), (12, "Packed")]
)
def test_bayer_patterns_give_the_true_colour(pattern: str, depth: int, packing: str) -> None:
    # A flat colour survives any demosaicing unchanged, so it tells whether the pattern
    # (PFNC naming against OpenCV's shifted naming) was mapped right.
    colour = np.array([30, 120, 220], np.uint16)  # B, G, R: all three differ
    bgr = np.broadcast_to(colour << (depth - 8), (16, 16, 3)).copy()
    name = f"Bayer{pattern}{depth}{packing}"
    raw = raw_for(mosaic(bgr, pattern), depth, packing)
    image = decode(raw, name, 16, 16)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[2:-2, 2:-2], np.broadcast_to(colour, (12, 12, 3)))


def test_bayer_pattern_mapping_matches_opencv_explicit_names() -> None:
    # OpenCV's newer names spell the PFNC pattern (BayerRGGB = PFNC BayerRG).
    names = {"RG": "RGGB", "GB": "GBRG", "GR": "GRBG", "BG": "BGGR"}
    cfa = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    for pfnc, spelled in names.items():
        code = getattr(cv2, f"COLOR_Bayer{spelled}2BGR", None)
        if code is None:
            pytest.skip("this OpenCV lacks the explicit Bayer names")
        np.testing.assert_array_equal(decode(cfa, f"Bayer{pfnc}8", 8, 8), cv2.cvtColor(cfa, code))


def test_row_padding_is_skipped() -> None:
    values = samples(8).astype(np.uint8)
    padded = np.hstack([values, np.full((H, 3), 255, np.uint8)])
    np.testing.assert_array_equal(decode(padded, "Mono8", W, H, padding_x=3), values)
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    padded_rgb = np.hstack([rgb.reshape(H, -1), np.zeros((H, 2), np.uint8)])
    np.testing.assert_array_equal(decode(padded_rgb, "RGB8", W, H, padding_x=2), rgb[:, :, ::-1])
    twelve = samples(12)
    packed_rows = raw_for(twelve, 12, "p").reshape(H, -1)
    padded12 = np.hstack([packed_rows, np.zeros((H, 4), np.uint8)])
    np.testing.assert_array_equal(decode(padded12, "Mono12p", W, H, padding_x=4), twelve >> 4)


def test_extra_bytes_after_the_frame_are_ignored_and_bytes_accepted() -> None:
    values = samples(8).astype(np.uint8)
    data = values.tobytes() + b"\x00" * 100
    np.testing.assert_array_equal(decode(data, "Mono8", W, H), values)


def test_short_buffer_and_unknown_format_raise() -> None:
    with pytest.raises(PixelFormatError, match="needs 48 bytes; the buffer holds 10"):
        decode(np.zeros(10, np.uint8), "Mono8", W, H)
    with pytest.raises(PixelFormatError, match=r"YUV422_8.*Mono12p"):
        decode(np.zeros(100, np.uint8), "YUV422_8", W, H)
    with pytest.raises(PixelFormatError):
        layout("Mono8p")  # packing exists for 10 and 12 bits only


def test_every_supported_format_decodes() -> None:
    for name in SUPPORTED_FORMATS:
        data = np.zeros(frame_bytes(name, W, H), np.uint8)
        image = decode(data, name, W, H)
        assert image.dtype == np.uint8 and image.shape[:2] == (H, W), name
        assert image.flags.c_contiguous, name


@pytest.mark.parametrize(
    "name", ["Mono8", "Mono12", "Mono12p", "RGB8", "BGR8", "RGBa8", "BayerRG8", "BayerGB12p"]
)
def test_decode_into_given_memory(name: str) -> None:
    data = RNG.integers(0, 256, frame_bytes(name, W, H), dtype=np.uint8)
    expected = decode(data, name, W, H)
    out = np.empty(output_shape(name, W, H), np.uint8)
    assert decode(data, name, W, H, out=out) is out
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="out must be"):
        decode(data, name, W, H, out=np.empty((H, W + 1), np.uint8))


def test_pool_reuses_only_arrays_nobody_holds() -> None:
    pool = ArrayPool(size=2)
    first = pool.take((4, 4))
    view = first[1:]
    assert pool.take((4, 4)) is not first  # held by `first`
    del first
    assert pool.take((4, 4)).base is None and view.base is not None
    held_by_view = view.base
    assert all(pool.take((4, 4)) is not held_by_view for _ in range(3))  # a view keeps it
    del view, held_by_view
    again = pool.take((4, 4))
    assert again.shape == (4, 4) and again.dtype == np.uint8
