"""The pictures of an evaluation: score histogram, ROC curve, and the overlays of the
parts a person should look at (the lowest-scored defects and the highest-scored good parts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sdk.evaluation.dataset import read_image, read_mask
from edge_sdk.runtime.inspector import Inspector
from edge_sdk.statistics import roc_curve

if TYPE_CHECKING:
    from edge_sdk.evaluation.report import Scored


def write_pictures(
    inspector: Inspector,
    out_dir: Path,
    good: list[Scored],
    bad: list[Scored],
    report: dict[str, Any],
    *,
    worst: int,
) -> dict[str, Any]:
    """Histogram, ROC and worst-case overlays; returns their file names (relative)."""
    from edge_sdk.evaluation.plots import outline_truth, roc_image, score_histogram_image
    from edge_sdk.runtime.overlay import write_image

    threshold = inspector.image_threshold
    at = report["at_threshold"]
    pictures: dict[str, Any] = {}
    title = (
        f"{report['bundle']['name']}: false rejects {at['false_rejects']['count']}/"
        f"{len(good)}, escapes {at['escapes']['count']}/{len(bad)}"
    )
    write_image(
        out_dir / "histogram.png",
        score_histogram_image(
            [s.score for s in good], [s.score for s in bad], threshold=threshold, title=title
        ),
    )
    pictures["histogram"] = "histogram.png"
    if good and bad:
        curve = roc_curve([s.score for s in good], [s.score for s in bad])
        point = (at["false_rejects"]["rate"], 1.0 - at["escapes"]["rate"])
        write_image(
            out_dir / "roc.png",
            roc_image(
                curve.fpr,
                curve.tpr,
                auroc=report["image"]["auroc"],
                operating_point=point,
                threshold=threshold,
                title=report["bundle"]["name"],
            ),
        )
        pictures["roc"] = "roc.png"

    # Defective parts with the lowest scores (escapes first) and good parts with the
    # highest (false rejects first): what a person should look at. Each file says
    # whether the part was missed (escape, false_reject) or not (caught, passed).
    lowest_bad = sorted(bad, key=lambda s: s.score)[:worst]
    highest_good = sorted(good, key=lambda s: -s.score)[:worst]
    for folder, chosen, miss in (
        ("lowest_scored_defects", lowest_bad, "escape"),
        ("highest_scored_good", highest_good, "false_reject"),
    ):
        names = []
        if chosen:
            (out_dir / folder).mkdir(exist_ok=True)
        for rank, item in enumerate(chosen, 1):
            image = read_image(item.sample.path)
            overlay = inspector.overlay(image, item.result)
            mask_path = item.sample.mask_path
            if mask_path is not None:
                outline_truth(overlay, read_mask(mask_path, image.shape[:2]))
            is_miss = item.rejected if miss == "false_reject" else not item.rejected
            status = miss if is_miss else ("caught" if miss == "escape" else "passed")
            kind = item.sample.defect_type or "good"
            name = f"{rank:02d}_{status}_{kind}_{item.sample.path.stem}.jpg"
            write_image(out_dir / folder / name, overlay)
            names.append(f"{folder}/{name}")
        pictures[folder] = names
    return pictures
