"""Evaluating a bundle on a labelled test set: the report, its pictures, its summary.

>>> from edge_sdk.evaluation import evaluate_bundle            # doctest: +SKIP
>>> report = evaluate_bundle("screw.bundle", "mvtec/screw", out_dir="eval-screw")  # doctest: +SKIP
>>> report["image"]["auroc"], report["pixel"]["au_pro"]       # doctest: +SKIP

Image metrics use every image; an image whose inspection failed (verdict ERROR) counts
as rejected with an infinite score, as the line would treat it. Pixel metrics use the
images that have a map and a mask (good images need none).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.evaluation.dataset import Sample, TestSet, find_test_set, read_image, read_mask
from edge_sdk.evaluation.metrics import PixelScores
from edge_sdk.evaluation.pictures import write_pictures
from edge_sdk.records import Result, Verdict
from edge_sdk.runtime.engine import Device
from edge_sdk.runtime.inspector import Inspector
from edge_sdk.runtime.manifest import ThresholdPolicy
from edge_sdk.statistics import auroc, auroc_interval, rate

log = logging.getLogger(__name__)

REPORT_NAME = "report.json"


@dataclass(frozen=True)
class Scored:
    """One test image after inspection."""

    sample: Sample
    result: Result

    @property
    def score(self) -> float:
        # An image that failed is a reject: rank it above every score.
        return math.inf if math.isnan(self.result.score) else self.result.score

    @property
    def rejected(self) -> bool:
        return self.result.verdict.is_reject


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _rounded(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [round(interval[0], 6), round(interval[1], 6)]


def evaluate(
    inspector: Inspector,
    test_set: TestSet,
    *,
    out_dir: Path | None = None,
    batch: int = 8,
    worst: int = 6,
    pixel_metrics: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Inspect every image of `test_set` and measure the bundle: image AUROC (overall and
    per defect type), pixel AUROC and AU-PRO, and false-reject and escape rates at the
    bundle's threshold with 95 % Wilson intervals. With `out_dir`, write `report.json`,
    the histogram and ROC pictures and overlays of the `worst` misses and false rejects.
    """
    start = time.perf_counter()
    notes: list[str] = []
    pixels = PixelScores()
    pixel_skipped: list[str] = []
    empty_masks = 0
    scored: list[Scored] = []
    samples = test_set.samples
    has_masks = any(s.mask_path is not None for s in test_set.defective)
    # Without a single mask there is nothing to measure: do not hold every pixel for nothing.
    use_pixels = pixel_metrics and has_masks
    for first in range(0, len(samples), batch):
        chunk = samples[first : first + batch]
        images = [read_image(s.path) for s in chunk]
        results = inspector.inspect_batch(images, frame_ids=range(first, first + len(chunk)))
        for sample, image, result in zip(chunk, images, results, strict=True):
            scored.append(Scored(sample, result))
            if not use_pixels:
                continue
            if result.anomaly_map is None:
                pixel_skipped.append(f"{sample.path.name}: {result.error}")
                continue
            if sample.is_defective and sample.mask_path is None:
                continue  # counted in test_set.missing_masks
            mask = read_mask(sample.mask_path, image.shape[:2]) if sample.mask_path else None
            if sample.is_defective and mask is not None and not mask.any():
                empty_masks += 1
            pixels.add(inspector.full_map(result), mask)
        if progress is not None:
            progress(min(first + batch, len(samples)), len(samples))
    elapsed = time.perf_counter() - start

    good = [s for s in scored if not s.sample.is_defective]
    bad = [s for s in scored if s.sample.is_defective]
    good_scores = np.array([s.score for s in good], dtype=np.float64)
    bad_scores = np.array([s.score for s in bad], dtype=np.float64)
    errors = [s for s in scored if s.result.verdict is Verdict.ERROR]
    threshold = inspector.image_threshold

    image_metrics: dict[str, Any] = {"auroc": None, "auroc_95ci": None, "per_defect_type": {}}
    if good and bad:
        image_metrics["auroc"] = auroc(good_scores, bad_scores)
        image_metrics["auroc_95ci"] = _rounded(auroc_interval(good_scores, bad_scores))
        for defect_type in test_set.defect_types:
            of_type = np.array([s.score for s in bad if s.sample.defect_type == defect_type])
            image_metrics["per_defect_type"][defect_type] = {
                "images": int(of_type.size),
                "auroc": auroc(good_scores, of_type),
                "auroc_95ci": _rounded(auroc_interval(good_scores, of_type)),
            }
    else:
        notes.append(
            "image AUROC needs good and defective images; "
            f"found {len(good)} good and {len(bad)} defective"
        )

    pixel: dict[str, Any] | None = None
    if not pixel_metrics:
        notes.append("pixel metrics not requested")
    elif not bad:
        notes.append("pixel metrics skipped: no defective images")
    elif not has_masks:
        notes.append("pixel metrics skipped: no defective image has a ground-truth mask")
    else:
        pixel = pixels.summary()
        if test_set.missing_masks:
            notes.append(
                f"{len(test_set.missing_masks)} of {len(bad)} defective images have "
                "no ground-truth mask and are left out of the pixel metrics"
            )
    if empty_masks:
        notes.append(
            f"{empty_masks} defective images have an empty mask: they count as "
            "defective for image metrics and add only good pixels to pixel metrics"
        )
    if pixel_skipped:
        notes.append(
            f"{len(pixel_skipped)} images failed and are left out of the pixel "
            f"metrics: {'; '.join(pixel_skipped[:5])}"
        )
    if errors:
        notes.append(f"{len(errors)} images got verdict ERROR; they count as rejected")
    all_scores = np.concatenate([good_scores, bad_scores])
    if np.any(all_scores[np.isfinite(all_scores)] < 0):
        notes.append(
            "scores below 0 are normal: the map is normalised to 0 at the training images' "
            "90 % quantile and 0.1 at their 99.5 %, so a clean part can score under 0"
        )

    false_rejects = sum(s.rejected for s in good)
    escapes = sum(not s.rejected for s in bad)
    good_rate = rate(false_rejects, len(good))
    at_threshold: dict[str, Any] = {
        "threshold": threshold,
        "false_rejects": good_rate,
        "escapes": rate(escapes, len(bad)),
        "errors": len(errors),
    }
    manifest = inspector.manifest
    target = target_check(manifest.threshold.policy, good_rate, good)
    if target is not None:
        at_threshold["target"] = target
        if target.get("note"):
            notes.append(target["note"])
    report: dict[str, Any] = {
        "bundle": {
            "name": manifest.name,
            "architecture": manifest.model.architecture,
            "threshold": {
                "image": threshold,
                "pixel": inspector.pixel_threshold,
                "policy": manifest.threshold.policy.method or "unspecified",
            },
            "graph": inspector.engine.variant,
            "provider": inspector.provider,
            # near-threshold parts of a faster variant re-decided by float32 (None: never)
            "recheck_margin": inspector.recheck_margin if inspector.recheck else None,
        },
        "data": {
            "path": str(test_set.root),
            "good_images": len(good),
            "defective_images": len(bad),
            "defect_types": {
                t: sum(s.defect_type == t for s in test_set.defective)
                for t in test_set.defect_types
            },
        },
        "image": image_metrics,
        "pixel": pixel,
        "at_threshold": at_threshold,
        "notes": notes,
        "seconds": round(elapsed, 3),
        "images": [
            {
                "path": str(s.sample.path),
                "defect_type": s.sample.defect_type,
                "score": _round(s.result.score),
                "verdict": s.result.verdict.value,
                **({"error": s.result.error} if s.result.error else {}),
            }
            for s in scored
        ],
    }
    if out_dir is not None:
        report["pictures"] = write_pictures(inspector, out_dir, good, bad, report, worst=worst)
        write_report(out_dir / REPORT_NAME, report)
    return report


def evaluate_bundle(
    bundle: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    device: Device = "auto",
    variant: str | None = None,
    threads: int = 0,
    recheck: bool = True,
    batch: int = 8,
    worst: int = 6,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Open `bundle`, find the MVTec-layout test set in `data` and `evaluate`."""
    test_set = find_test_set(data)
    out = Path(out_dir).expanduser().absolute() if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    with Inspector.open(
        bundle,
        device=device,
        variant=variant,
        threads=threads,
        max_batch=batch,
        recheck=recheck,
    ) as inspector:
        return evaluate(
            inspector, test_set, out_dir=out, batch=batch, worst=worst, progress=progress
        )


def write_report(path: Path, report: dict[str, Any]) -> None:
    """The report as indented JSON (non-finite numbers as null, which JSON lacks)."""
    import json

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(report), indent=2) + "\n")


def target_check(
    policy: ThresholdPolicy, false_rejects: dict[str, Any], good: Sequence[Scored]
) -> dict[str, Any] | None:
    """The false-reject rate on the test's good images against the bundle's target and the
    interval its calibration expected; a note that says why when it falls outside. None
    for bundles calibrated before the interval was recorded, or with no good test images."""
    expected = policy.expected_false_reject_rate_95ci
    target = policy.target_false_reject_rate
    if expected is None or target is None or not false_rejects["of"]:
        return None
    lo, hi = expected
    seen = false_rejects["rate"]
    # The test's own sampling error counts too: outside means the two intervals do not meet.
    seen_lo, seen_hi = false_rejects["rate_95ci"]
    within = seen_lo <= hi and seen_hi >= lo
    out: dict[str, Any] = {
        "target_frr": target,
        "expected_95ci": [lo, hi],
        "calibration_images": policy.images,
        "within": within,
    }
    calibration = policy.good_scores.get("median")
    test_median = float(np.median([s.score for s in good]))
    out["median_good_score"] = {"calibration": calibration, "test": round(test_median, 6)}
    if not within:
        side = "more" if seen > hi else "fewer"
        why = ""
        if calibration is not None and seen > hi and test_median > calibration:
            why = (
                f": the test's good images score higher than the calibration images (median "
                f"{test_median:.4g} against {calibration:.4g}), so they differ from the "
                f"training images (lighting, camera, parts); recalibrate on good images from "
                f"the line (edge-ad calibrate)"
            )
        elif seen < lo:
            why = ": the threshold is stricter on these images than calibration expected"
        out["note"] = (
            f"{side} false rejects on the test's good images ({seen:.3g}) than the bundle's "
            f"calibration expected ({lo:.3g} to {hi:.3g} for a target of {target:g}){why}"
        )
    return out


def format_summary(report: dict[str, Any]) -> str:
    """The report in a few lines for a person at a terminal."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f} %"

    def interval(bounds: list[float] | None) -> str:
        # Over the test parts that could have been drawn (DeLong), not over training runs.
        return "" if bounds is None else f" (95 % CI {pct(bounds[0])} to {pct(bounds[1])})"

    def ci(r: dict[str, Any]) -> str:
        if r["rate"] is None:
            return "-"
        lo, hi = r["rate_95ci"]
        return f"{r['count']}/{r['of']} = {pct(r['rate'])} (95 % CI {pct(lo)} to {pct(hi)})"

    b, d, img, at = report["bundle"], report["data"], report["image"], report["at_threshold"]
    lines = [
        f"bundle {b['name']} ({b['architecture']}, {b['graph']} on {b['provider']}), "
        f"threshold {b['threshold']['image']:.6g} ({b['threshold']['policy']})",
        f"data   {d['path']}: {d['good_images']} good, {d['defective_images']} defective "
        f"({', '.join(f'{k} {v}' for k, v in d['defect_types'].items()) or 'none'})",
        f"image AUROC      {pct(img['auroc'])}{interval(img.get('auroc_95ci'))}",
    ]
    for defect_type, entry in img["per_defect_type"].items():
        lines.append(
            f"  {defect_type:<15}{pct(entry['auroc'])}{interval(entry.get('auroc_95ci'))}  "
            f"({entry['images']} images)"
        )
    pixel = report["pixel"]
    if pixel is not None:
        lines.append(f"pixel AUROC      {pct(pixel['auroc'])}")
        lines.append(f"AU-PRO (FPR {pixel['au_pro_fpr_limit']:g}) {pct(pixel['au_pro'])}")
    lines.append(f"false rejects    {ci(at['false_rejects'])}")
    target = at.get("target")
    if target is not None:
        lo, hi = target["expected_95ci"]
        verdict = "within" if target["within"] else "OUTSIDE"
        lines.append(
            f"  target         {pct(target['target_frr'])}, expected {pct(lo)} to {pct(hi)} "
            f"from {target['calibration_images']} calibration images: {verdict}"
        )
    lines.append(f"escapes          {ci(at['escapes'])}")
    lines.extend(f"note: {note}" for note in report["notes"])
    return "\n".join(lines)


__all__ = ["REPORT_NAME", "Scored", "evaluate", "evaluate_bundle", "format_summary", "write_report"]
