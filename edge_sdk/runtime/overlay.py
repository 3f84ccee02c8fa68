"""Heatmap overlays for operators, and writing them out.

The colour scale is anchored to the bundle's pixel threshold, never to the image's own
minimum and maximum: a map value of ``pixel_threshold`` is always the middle of the JET
scale (green-yellow), ``2 * pixel_threshold`` and above is full red, and 0 or below is
blue. So the same value has the same colour on every part, and a good part does not get
painted red just because its (tiny) maximum was stretched to the top of the scale.

Heat is blended with a weight that ramps with the value (none at or below 0, full
``alpha`` at the threshold), so a good part looks like the photo with a faint tint.

>>> import numpy as np
>>> from edge_sdk.records import Verdict
>>> image = np.full((120, 160), 90, np.uint8)
>>> amap = np.zeros((120, 160), np.float32)
>>> amap[40:80, 60:100] = 0.9
>>> out = render_overlay(image, amap, pixel_threshold=0.4, verdict=Verdict.NOK,
...                      score=0.9, image_threshold=0.5)
>>> out.shape, out.dtype.name
((120, 160, 3), 'uint8')
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edge_sdk.errors import EdgeADError
from edge_sdk.records import Verdict

__all__ = [
    "FALLBACK_PIXEL_THRESHOLD",
    "VERDICT_COLORS",
    "color_index",
    "encode_jpeg",
    "render_error_overlay",
    "render_overlay",
    "write_image",
]

logger = logging.getLogger(__name__)

# The map is normalised so that 0.1 is the 99.5th percentile of good pixels
# (docs/architecture.md, "The method"); without a usable bundle threshold that is the
# natural anchor.
FALLBACK_PIXEL_THRESHOLD = 0.1

VERDICT_COLORS: dict[Verdict, tuple[int, int, int]] = {  # BGR, as OpenCV draws
    Verdict.OK: (0, 200, 0),
    Verdict.NOK: (0, 0, 255),
    Verdict.ERROR: (255, 0, 255),
}
_CONTOUR_COLOR = (255, 255, 255)
_CONTOUR_EDGE = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_PX = 22.0  # cap height in pixels of _FONT at scale 1.0
_JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET)


def color_index(value: float, pixel_threshold: float) -> int:
    """The JET colour index (0..255) that a map value gets for this pixel threshold.

    The threshold sits at mid-scale; NaN is maximal (fail-safe).

    >>> color_index(0.2, 0.2), color_index(0.4, 0.2), color_index(-1.0, 0.2)
    (128, 255, 0)
    >>> color_index(float("nan"), 0.2)
    255
    """
    if math.isnan(value):
        return 255
    full_scale = 2.0 * _anchor(pixel_threshold)
    return round(min(max(value / full_scale, 0.0), 1.0) * 255.0)


def render_overlay(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    *,
    pixel_threshold: float,
    verdict: Verdict,
    score: float,
    image_threshold: float,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend the anomaly map over the image, outline defects, and label the verdict.

    `image` is uint8 HxW (grey) or HxWx3 (BGR); `anomaly_map` is the normalised combined
    map, float32 HxW at the image's own size. Returns a new BGR uint8 image; the input
    is not modified. Pixels whose value is >= `pixel_threshold` (or NaN) are outlined.

    >>> import numpy as np
    >>> image = np.zeros((64, 64, 3), np.uint8)
    >>> amap = np.full((64, 64), np.nan, np.float32)  # a broken map looks like a defect
    >>> out = render_overlay(image, amap, pixel_threshold=0.0, verdict=Verdict.ERROR,
    ...                      score=float("nan"), image_threshold=0.5)
    >>> out.shape
    (64, 64, 3)
    """
    bgr_or_grey = _check_image(image)
    amap = _check_map(anomaly_map, bgr_or_grey.shape[:2])
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    anchor = _anchor(pixel_threshold)
    full_scale = 2.0 * anchor

    # One float scratch buffer: clip to the anchored scale, then scale+saturate to uint8.
    # convertScaleAbs turns NaN into 0, so NaN pixels are put back to 255 below.
    scratch = np.clip(amap, 0.0, full_scale, out=np.empty_like(amap))
    index = cv2.convertScaleAbs(scratch, alpha=255.0 / full_scale)
    del scratch
    # numpy, not cv2.compare(m, m, CMP_NE): OpenCV 5's vectorised path says NaN == NaN.
    nan_mask = np.isnan(amap) if np.isnan(amap.max()) else None
    if nan_mask is not None:
        np.putmask(index, nan_mask, 255)

    # Premultiplied heat and the image's remaining weight depend only on the index, so
    # both are 256-entry lookup tables: no per-pixel float arithmetic.
    ramp = np.clip(np.arange(256, dtype=np.float32) / 128.0, 0.0, 1.0)
    weight = alpha * ramp * ramp
    heat_lut = np.round(_JET.astype(np.float32) * weight[:, None, None]).astype(np.uint8)
    keep_lut = np.round(255.0 * (1.0 - weight)).astype(np.uint8)

    keep = cv2.LUT(index, keep_lut)
    if bgr_or_grey.ndim == 2:
        cv2.multiply(bgr_or_grey, keep, dst=keep, scale=1.0 / 255.0)
        out = cv2.cvtColor(keep, cv2.COLOR_GRAY2BGR)
    else:
        keep3 = cv2.cvtColor(keep, cv2.COLOR_GRAY2BGR)
        out = cv2.multiply(bgr_or_grey, keep3, dst=keep3, scale=1.0 / 255.0)
    del keep
    cv2.add(out, cv2.applyColorMap(index, heat_lut), dst=out)
    del index

    level = pixel_threshold if math.isfinite(pixel_threshold) else anchor
    # A 0/1 view of the boolean mask is enough for findContours (it tests non-zero).
    defects = np.greater_equal(amap, level).view(np.uint8)
    if nan_mask is not None:
        defects |= nan_mask.view(np.uint8)
    _draw_contours(out, defects)

    text = f"{verdict.value} {score:.3f} / thr {image_threshold:.3f}"
    _draw_label(out, text, VERDICT_COLORS[verdict])
    _draw_legend(out, pixel_threshold, anchor)
    return out


def render_error_overlay(image: np.ndarray, message: str) -> np.ndarray:
    """The image with a magenta banner and frame, for an ERROR verdict without a map.

    >>> import numpy as np
    >>> out = render_error_overlay(np.zeros((100, 200), np.uint8), "camera timeout")
    >>> out.shape, tuple(int(c) for c in out[2, 100])
    ((100, 200, 3), (255, 0, 255))
    """
    checked = _check_image(image)
    out = cv2.cvtColor(checked, cv2.COLOR_GRAY2BGR) if checked.ndim == 2 else checked.copy()
    h, w = out.shape[:2]
    scale, thickness, margin = _text_metrics(out)
    color = VERDICT_COLORS[Verdict.ERROR]
    cv2.rectangle(out, (0, 0), (w - 1, h - 1), color, max(2, 2 * thickness))
    text = _fit_text(f"ERROR: {_ascii(message)}", w - 2 * margin, scale, thickness)
    (_, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    banner_h = min(h, text_h + baseline + 2 * margin)
    out[:banner_h] = color
    cv2.putText(
        out, text, (margin, margin + text_h), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA
    )
    return out


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a uint8 grey or BGR image.

    >>> import numpy as np
    >>> encode_jpeg(np.zeros((8, 8, 3), np.uint8))[:2]
    b'\\xff\\xd8'
    """
    if not 0 <= quality <= 100:
        raise ValueError(f"JPEG quality must be within 0..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", _check_image(image), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise EdgeADError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return buf.tobytes()


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an image; the format follows the suffix (.png, .jpg, ...).

    The file appears complete or not at all (written beside it, then renamed), so a
    process watching an archive folder never reads half an image.

    >>> import numpy as np, tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_image(pathlib.Path(d) / "part.png", np.zeros((4, 4), np.uint8))
    ...     sorted(p.name for p in pathlib.Path(d).iterdir())
    ['part.png']
    """
    target = Path(path)
    # imencode rather than imwrite: it lets us rename atomically, and it reports why
    # (imwrite only returns False), and it handles non-ASCII paths on every platform.
    try:
        ok, buf = cv2.imencode(target.suffix, _check_image(image))
    except cv2.error as exc:
        raise EdgeADError(
            f"cannot write image {target}: OpenCV cannot encode suffix {target.suffix!r} "
            f"({getattr(exc, 'err', exc)})"
        ) from exc
    if not ok:
        raise EdgeADError(f"cannot write image {target}: OpenCV could not encode it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise EdgeADError(f"cannot write image {target}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.tobytes())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EdgeADError(f"cannot write image {target}: {exc.strerror}") from exc


def _anchor(pixel_threshold: float) -> float:
    """The map value that sits at mid-scale: the threshold, if it is usable."""
    if math.isfinite(pixel_threshold) and pixel_threshold > 0.0:
        return float(pixel_threshold)
    logger.debug(
        "pixel threshold %r cannot anchor the colour scale; using %s",
        pixel_threshold,
        FALLBACK_PIXEL_THRESHOLD,
    )
    return FALLBACK_PIXEL_THRESHOLD


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        found = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 image, got {found}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3):
        return np.ascontiguousarray(image)
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")


def _check_map(anomaly_map: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.ndim == 3 and amap.shape[2] == 1:
        amap = amap[:, :, 0]
    if amap.shape != tuple(size):
        raise ValueError(
            f"anomaly map must be HxW at the image's size {tuple(size)}, got {amap.shape} "
            "(scale a model-resolution map to the image first)"
        )
    return np.ascontiguousarray(amap)


def _text_metrics(image: np.ndarray) -> tuple[float, int, int]:
    """Font scale, line thickness and margin that read well at this image size."""
    short = min(image.shape[:2])
    scale = max(0.45, 0.035 * short / _FONT_PX)  # 0.45: about 10 px caps, still legible
    thickness = max(1, round(scale * 1.6))
    margin = max(3, round(0.012 * short))
    return scale, thickness, margin


def _draw_contours(out: np.ndarray, defects: np.ndarray) -> None:
    contours, _ = cv2.findContours(defects, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return
    thickness = max(1, round(min(out.shape[:2]) / 600))
    # A dark edge under the white line keeps it visible on bright metal as well.
    cv2.drawContours(out, contours, -1, _CONTOUR_EDGE, thickness + 2, cv2.LINE_8)
    cv2.drawContours(out, contours, -1, _CONTOUR_COLOR, thickness, cv2.LINE_8)


def _draw_label(out: np.ndarray, text: str, color: tuple[int, int, int]) -> None:
    scale, thickness, margin = _text_metrics(out)
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(2, margin // 2)
    x, y = margin, margin + text_h
    # White on the verdict's colour: readable at any size, on any part (red on grey
    # was not, on small images).
    cv2.rectangle(
        out, (x - pad, y - text_h - pad), (x + text_w + pad, y + baseline + pad), color, -1
    )
    cv2.putText(out, text, (x, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _draw_legend(out: np.ndarray, pixel_threshold: float, anchor: float) -> None:
    """A vertical JET bar at the top right: 0 at the bottom, 2x anchor at the top."""
    h, w = out.shape[:2]
    scale, thickness, margin = _text_metrics(out)
    scale *= 0.7
    bar_w = max(6, round(0.02 * w))
    bar_h = round(0.3 * h)
    label_w = cv2.getTextSize("thr 0.000", _FONT, scale, thickness)[0][0]
    if min(h, w) < 300 or w < bar_w + label_w + 3 * margin:
        return  # too small to read; the contours and the label still tell the story
    x1, y0 = w - margin, margin
    x0, y1 = x1 - bar_w, y0 + bar_h
    column = np.linspace(255, 0, bar_h).round().astype(np.uint8).reshape(bar_h, 1)
    out[y0:y1, x0:x1] = cv2.applyColorMap(column, cv2.COLORMAP_JET)
    cv2.rectangle(out, (x0 - 1, y0 - 1), (x1, y1), (255, 255, 255), 1)

    full_scale = 2.0 * anchor
    level = pixel_threshold if math.isfinite(pixel_threshold) else anchor
    frac = min(max(level / full_scale, 0.0), 1.0)
    tick_y = round(y1 - 1 - frac * (bar_h - 1))
    tick_len = max(4, bar_w // 2)
    cv2.line(out, (x0 - tick_len, tick_y), (x1, tick_y), (255, 255, 255), max(1, thickness // 2))
    for text, y in (
        (f"{full_scale:.3g}", y0),
        (f"thr {level:.3g}", tick_y),
        ("0", y1),
    ):
        (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
        org = (x0 - tick_len - text_w - 3, min(max(y + text_h // 2, text_h + 1), h - 2 - baseline))
        # A dark box, not an outlined glyph: OpenCV 5's fonts do not outline cleanly.
        cv2.rectangle(
            out,
            (org[0] - 1, org[1] - text_h - 1),
            (org[0] + text_w + 1, org[1] + baseline + 1),
            (0, 0, 0),
            -1,
        )
        cv2.putText(out, text, org, _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _ascii(message: str) -> str:
    """Hershey fonts draw ASCII only; one line, other characters as '?'."""
    return " ".join(message.split()).encode("ascii", "replace").decode("ascii")


def _fit_text(text: str, max_width: int, scale: float, thickness: int) -> str:
    if cv2.getTextSize(text, _FONT, scale, thickness)[0][0] <= max_width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with an ellipsis: binary search, few calls
        mid = (lo + hi + 1) // 2
        if cv2.getTextSize(text[:mid] + "...", _FONT, scale, thickness)[0][0] <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "..."
