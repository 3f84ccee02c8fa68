"""The evaluation's pictures, drawn with OpenCV: score histograms with the threshold, the
ROC curve with the operating point, and ground-truth outlines on overlays.

OpenCV rather than matplotlib: the runtime already depends on it, and an edge box should
not need a plotting stack to explain its own model.

>>> import numpy as np
>>> picture = score_histogram_image([0.1, 0.2, 0.25], [0.6, 0.9], threshold=0.4)
>>> picture.shape, picture.dtype
((620, 960, 3), dtype('uint8'))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_GRID = (225, 225, 225)
_AXIS = (60, 60, 60)
_GOOD = (60, 160, 40)  # BGR green
_BAD = (40, 40, 210)  # BGR red
_CURVE = (180, 90, 20)  # BGR blue
_THRESHOLD = (200, 0, 160)  # BGR purple: distinct from both classes
_TRUTH = (255, 255, 0)  # BGR cyan: ground truth outlines on overlays


def nice_ticks(lo: float, hi: float, *, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi], about `count` of them (steps of 1, 2 or 5).

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _text(
    img: np.ndarray,
    text: str,
    org: tuple[int, int],
    *,
    scale: float = 0.5,
    color: tuple[int, int, int] = _BLACK,
    anchor: str = "left",
    thickness: int = 1,
) -> None:
    """Draw text; `anchor` left/centre/right aligns `org` to that side of the baseline."""
    (w, _), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    x = org[0] - {"left": 0, "centre": w // 2, "right": w}[anchor]
    cv2.putText(img, text, (x, org[1]), _FONT, scale, color, thickness, cv2.LINE_AA)


def _vertical_text(
    img: np.ndarray, text: str, centre: tuple[int, int], *, scale: float = 0.55
) -> None:
    """Text read bottom to top, centred on `centre` (a y-axis label)."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    patch = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
    cv2.putText(patch, text, (2, h + 2), _FONT, scale, _BLACK, 1, cv2.LINE_AA)
    rotated = cv2.rotate(patch, cv2.ROTATE_90_COUNTERCLOCKWISE)
    ph, pw = rotated.shape[:2]
    y0 = max(0, centre[1] - ph // 2)
    x0 = max(0, centre[0] - pw // 2)
    region = img[y0 : y0 + ph, x0 : x0 + pw]
    np.minimum(region, rotated[: region.shape[0], : region.shape[1]], out=region)


def _dashed_vline(
    img: np.ndarray,
    x: int,
    y0: int,
    y1: int,
    color: tuple[int, int, int],
    *,
    dash: int = 8,
    thickness: int = 2,
) -> None:
    for y in range(y0, y1, 2 * dash):
        cv2.line(img, (x, y), (x, min(y + dash, y1)), color, thickness, cv2.LINE_AA)


def _dashed_line(
    img: np.ndarray,
    p0: tuple[int, int],
    p1: tuple[int, int],
    color: tuple[int, int, int],
    *,
    dash: int = 8,
) -> None:
    length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
    steps = max(1, int(length // dash))
    for k in range(0, steps, 2):
        a, b = k / steps, min(1.0, (k + 1) / steps)
        q0 = (round(p0[0] + a * (p1[0] - p0[0])), round(p0[1] + a * (p1[1] - p0[1])))
        q1 = (round(p0[0] + b * (p1[0] - p0[0])), round(p0[1] + b * (p1[1] - p0[1])))
        cv2.line(img, q0, q1, color, 1, cv2.LINE_AA)


def score_histogram_image(
    good_scores: Sequence[float] | np.ndarray,
    bad_scores: Sequence[float] | np.ndarray,
    *,
    threshold: float,
    title: str = "Image scores",
    bins: int = 40,
) -> np.ndarray:
    """Two histograms sharing the score axis, good parts above and defective below (each
    on its own count scale, so a few defects are not flattened by many good parts), with
    the threshold as a dashed line through both. Non-finite scores are left out.
    """
    good = np.asarray(good_scores, dtype=np.float64)
    bad = np.asarray(bad_scores, dtype=np.float64)
    good, bad = good[np.isfinite(good)], bad[np.isfinite(bad)]
    width, height = 960, 620
    left, right, top, bottom, gap = 90, 40, 80, 70, 44
    img = np.full((height, width, 3), 255, np.uint8)
    values = np.concatenate([good, bad, [threshold] if math.isfinite(threshold) else []])
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.04 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    plot_w = width - left - right
    panel_h = (height - top - bottom - gap) // 2

    def x_of(value: float) -> int:
        return left + round((value - lo) / (hi - lo) * plot_w)

    panels = [
        (good, _GOOD, f"good parts (n={good.size})", top),
        (bad, _BAD, f"defective parts (n={bad.size})", top + panel_h + gap),
    ]
    for scores, color, label, y_top in panels:
        counts, _ = np.histogram(scores, bins=edges)
        y_bottom = y_top + panel_h
        peak = max(int(counts.max()) if counts.size else 0, 1)
        y_ticks = [t for t in nice_ticks(0, peak, count=4) if float(t).is_integer()]
        for tick in y_ticks:
            y = y_bottom - round(tick / peak * (panel_h - 10))
            cv2.line(img, (left, y), (left + plot_w, y), _GRID, 1)
            _text(img, str(int(tick)), (left - 8, y + 5), anchor="right", scale=0.45)
        for k, count in enumerate(counts):
            if count == 0:
                continue
            x0, x1 = x_of(edges[k]), x_of(edges[k + 1])
            y = y_bottom - round(count / peak * (panel_h - 10))
            cv2.rectangle(img, (x0 + 1, y), (x1 - 1, y_bottom), color, -1)
        cv2.rectangle(img, (left, y_top), (left + plot_w, y_bottom), _AXIS, 1)
        # Above the panel, not inside it, where it could hide a bar.
        _text(img, label, (left, y_top - 8), color=color, scale=0.55, thickness=2)
        _vertical_text(img, "images", (28, y_top + panel_h // 2))
    if math.isfinite(threshold):
        x = x_of(threshold)
        _dashed_vline(img, x, top - 24, height - bottom, _THRESHOLD)
        label = f"threshold {_fmt(threshold)}"
        near_right = x > width - right - 160
        _text(
            img,
            label,
            (x - 6 if near_right else x + 6, top - 28),
            color=_THRESHOLD,
            anchor="right" if near_right else "left",
            scale=0.5,
        )
    axis_y = height - bottom
    for tick in nice_ticks(lo, hi, count=8):
        x = x_of(tick)
        cv2.line(img, (x, axis_y), (x, axis_y + 6), _AXIS, 1)
        _text(img, _fmt(tick), (x, axis_y + 22), anchor="centre", scale=0.45)
    _text(
        img,
        "image score (anomaly map maximum); reject when above the threshold",
        (left + plot_w // 2, height - 18),
        anchor="centre",
        scale=0.55,
    )
    _text(img, title, (left, 30), scale=0.7, thickness=2)
    return img


def roc_image(
    fpr: Sequence[float] | np.ndarray,
    tpr: Sequence[float] | np.ndarray,
    *,
    auroc: float,
    operating_point: tuple[float, float] | None = None,
    threshold: float | None = None,
    title: str = "ROC curve",
) -> np.ndarray:
    """The ROC curve on a unit square with the chance diagonal and, if given, the bundle's
    operating point (false-reject rate, share of defects caught) marked and labelled.

    >>> roc_image([0, 0, 1], [0, 1, 1], auroc=1.0).shape
    (720, 720, 3)
    """
    size, left, right, top, bottom = 720, 90, 30, 70, 80
    img = np.full((size, size, 3), 255, np.uint8)
    plot = size - left - right
    plot_h = size - top - bottom

    def point(x: float, y: float) -> tuple[int, int]:
        return left + round(x * plot), top + plot_h - round(y * plot_h)

    for tick in nice_ticks(0.0, 1.0):
        x, _ = point(tick, 0)
        _, y = point(0, tick)
        cv2.line(img, (x, top), (x, top + plot_h), _GRID, 1)
        cv2.line(img, (left, y), (left + plot, y), _GRID, 1)
        _text(img, f"{tick:.1f}", (x, top + plot_h + 22), anchor="centre", scale=0.45)
        _text(img, f"{tick:.1f}", (left - 8, y + 5), anchor="right", scale=0.45)
    _dashed_line(img, point(0, 0), point(1, 1), (150, 150, 150))
    cv2.rectangle(img, (left, top), (left + plot, top + plot_h), _AXIS, 1)
    pts = np.array([point(float(x), float(y)) for x, y in zip(fpr, tpr, strict=True)], np.int32)
    cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, _CURVE, 2, cv2.LINE_AA)
    if operating_point is not None:
        px, py = point(*operating_point)
        cv2.circle(img, (px, py), 7, _THRESHOLD, 2, cv2.LINE_AA)
        label = "threshold" if threshold is None else f"threshold {_fmt(threshold)}"
        label += f": rejects {operating_point[0]:.3g} good, catches {operating_point[1]:.3g}"
        (w, _), _ = cv2.getTextSize(label, _FONT, 0.45, 1)
        tx = min(px + 12, size - right - w - 4)
        ty = py + 22 if py < top + 30 else py - 12
        _text(img, label, (max(left + 4, tx), ty), color=_THRESHOLD, scale=0.45)
    _text(
        img,
        "false-positive rate (good parts rejected)",
        (left + plot // 2, size - 22),
        anchor="centre",
        scale=0.55,
    )
    _vertical_text(img, "true-positive rate (defects caught)", (28, top + plot_h // 2))
    _text(img, f"{title}   AUROC {auroc:.4f}", (left, 40), scale=0.7, thickness=2)
    return img


def outline_truth(overlay: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Draw the ground-truth defect outline (cyan on a dark edge) onto an overlay, in place.

    >>> import numpy as np
    >>> out = outline_truth(np.zeros((20, 20, 3), np.uint8), np.eye(20, dtype=bool))
    >>> bool(out.any())
    True
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if contours:
        thickness = max(1, round(min(overlay.shape[:2]) / 400))
        cv2.drawContours(overlay, contours, -1, _BLACK, thickness + 2, cv2.LINE_8)
        cv2.drawContours(overlay, contours, -1, _TRUTH, thickness, cv2.LINE_8)
        # Say what the cyan line is: the overlay's own white contours are the model's.
        scale = max(0.35, 0.0012 * min(overlay.shape[:2]))
        (w, h), base = cv2.getTextSize("ground truth", _FONT, scale, 1)
        y = overlay.shape[0] - 4
        cv2.rectangle(overlay, (2, y - h - 4), (8 + w, y + base - 2), _BLACK, -1)
        cv2.putText(overlay, "ground truth", (5, y - 2), _FONT, scale, _TRUTH, 1, cv2.LINE_AA)
    return overlay


__all__ = ["nice_ticks", "outline_truth", "roc_image", "score_histogram_image"]
