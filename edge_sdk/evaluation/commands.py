"""`edge-ad eval` and `edge-ad calibrate`: parsers and handlers, wired in by `edge_sdk.cli`.

Handlers return the exit code (0 ok, 2 usage); an `EdgeADError` they raise becomes exit
code 4 in `edge_sdk.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_sdk.calibration.thresholds import GOOD_ONLY_POLICIES, POLICIES
from edge_sdk.cli_options import EXIT_OK, EXIT_USAGE, map_weights
from edge_sdk.runtime.engine import DEVICES
from edge_sdk.runtime.options import add_engine_options

POLICY_CHOICES = list(POLICIES)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a rate between 0 and 1 (e.g. 0.01 for 1 %), got {value}"
        )
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `eval` to the `edge-ad` sub-command parsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "eval",
        help="measure a bundle on a labelled test set (MVTec layout)",
        description="Image AUROC (overall and per defect type), pixel AUROC, AU-PRO (to "
        "FPR 0.3), and false-reject and escape rates at the bundle's threshold. DATA holds "
        "test/good/, test/<defect>/ and ground_truth/<defect>/<stem>_mask.png. With --out: "
        "report.json, histogram.png, roc.png and overlays of the worst cases.",
    )
    p.add_argument("data", metavar="DATA", help="data set folder (MVTec AD layout)")
    p.add_argument("--bundle", required=True, help="the *.bundle file or directory")
    p.add_argument("--out", help="folder for report.json and pictures")
    add_engine_options(p)
    p.add_argument("--batch", type=_positive, default=8, help="images per graph run")
    p.add_argument(
        "--worst",
        type=int,
        default=6,
        help="overlays of this many lowest-scored defects and highest-scored good parts",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON (the per-image list is only in report.json)",
    )
    p.set_defaults(func=cmd_eval)
    return p


PROGRESS_EVERY_S = 10.0  # between progress lines when stderr is not a terminal


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the evaluation; print the summary (or the JSON report)."""
    from edge_sdk.evaluation.report import evaluate_bundle, format_summary

    tty, last = sys.stderr.isatty(), [float("-inf")]

    def progress(done: int, total: int) -> None:
        if args.json and tty:
            return
        if tty:  # one updating line
            end = "" if done < total else "\n"
            print(f"\r{done}/{total} images", end=end, file=sys.stderr, flush=True)
        elif done >= total or time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            # A log or a pipe: a line now and then, so minutes of work are not silent.
            print(f"eval {done}/{total} images", file=sys.stderr, flush=True)
            last[0] = time.monotonic()

    report = evaluate_bundle(
        args.bundle,
        args.data,
        out_dir=args.out,
        device=args.device,
        variant=args.variant,
        threads=args.threads,
        recheck=args.recheck,
        batch=args.batch,
        worst=max(args.worst, 0),
        progress=progress,
    )
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "images"}, indent=2, default=str))
    else:
        print(format_summary(report))
        if args.out:
            print(f"report and pictures in {Path(args.out).expanduser().absolute()}")
    return EXIT_OK


def add_calibrate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `calibrate` to the `edge-ad` sub-command parsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "calibrate",
        help="new quantiles and threshold from new images, as a new bundle",
        description="Recalibrate a bundle for new conditions without retraining: quantiles "
        "and threshold are measured on --good (and --bad) images through the bundle's own "
        "graph and written, with the same graphs, to a new bundle that records its parent.",
    )
    p.add_argument("--bundle", required=True, help="the bundle to recalibrate")
    p.add_argument("--good", required=True, help="folder of good images (new conditions)")
    p.add_argument("--bad", help="folder of defective images, for the threshold policies")
    p.add_argument("--out", required=True, help="the new bundle file (must not exist)")
    p.add_argument(
        "--target-frr",
        type=_rate,
        default=0.01,
        help="target false-reject rate on good images (default 0.01)",
    )
    p.add_argument(
        "--policy",
        choices=POLICY_CHOICES,
        help="robust: target false-reject rate on good images, fitted where too few "
        "images resolve it; frr: the same, measured only (the highest good score when too "
        "few); f1: best F1; zero-escape: reject every defective image seen; strict: the "
        "lower of robust and zero-escape. Default: robust, or strict with --bad",
    )
    p.add_argument(
        "--map-weights",
        type=map_weights,
        metavar="ST,AE",
        help="new weights of the student's and the autoencoder's maps (default: the "
        "parent's); the threshold is set on the scores they give",
    )
    p.add_argument("--name", help="name of the new bundle (default <name>-recal-<date>)")
    p.add_argument(
        "--device",
        default="auto",
        choices=list(DEVICES),
        help="provider for the float32 graph (calibration never uses a variant); "
        "default auto, as for every command that opens an engine",
    )
    p.add_argument("--json", action="store_true", help="print the new threshold record as JSON")
    p.set_defaults(func=cmd_calibrate)
    return p


def _load_all(paths: list[Path]) -> Iterator[Any]:
    from edge_sdk.evaluation.dataset import read_image

    for path in paths:  # one at a time: a folder of images need not fit in memory
        yield read_image(path)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Write the recalibrated bundle; print what changed."""
    from edge_sdk.calibration.recalibrate import recalibrate
    from edge_sdk.evaluation.dataset import list_images
    from edge_sdk.runtime.bundle import Bundle
    from edge_sdk.runtime.manifest import MapWeights

    if args.policy is not None and args.policy not in GOOD_ONLY_POLICIES and not args.bad:
        print(
            f"edge-ad calibrate: error: --policy {args.policy} needs defective images (--bad DIR)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    good = list_images(args.good)
    if not good:
        print(f"edge-ad calibrate: error: no images in {args.good}", file=sys.stderr)
        return EXIT_USAGE
    bad = list_images(args.bad) if args.bad else []
    if args.bad and not bad:
        print(f"edge-ad calibrate: error: no images in {args.bad}", file=sys.stderr)
        return EXIT_USAGE
    parent = Bundle.open(args.bundle)
    w = args.map_weights
    out = recalibrate(
        parent,
        _load_all(good),
        out=args.out,
        bad_images=_load_all(bad) if bad else None,
        target_frr=args.target_frr,
        policy=args.policy,
        name=args.name,
        device=args.device,
        good_source=str(Path(args.good).expanduser().absolute()),
        bad_source=str(Path(args.bad).expanduser().absolute()) if args.bad else "",
        weights=None if w is None else MapWeights(st=w[0], ae=w[1]),
    )
    child = Bundle.open(out).manifest
    policy = child.threshold.policy
    if args.json:
        print(
            json.dumps(
                {
                    "bundle": str(out),
                    "name": child.name,
                    "parent": child.parent,
                    "threshold": child.threshold.model_dump(mode="json"),
                    "normalization": child.normalization.model_dump(mode="json"),
                },
                indent=2,
            )
        )
        return EXIT_OK
    at, split = policy.at_threshold, policy.split
    print(f"wrote {out} ({child.name}), parent {child.parent}")
    print(
        f"threshold {parent.manifest.threshold.image:.6g} -> {child.threshold.image:.6g} "
        f"(policy {policy.policy}, {policy.chosen_by})"
    )
    old, new = parent.manifest.normalization.weights, child.normalization.weights
    if old != new:
        print(f"map weights st {old.st:g}, ae {old.ae:g} -> st {new.st:g}, ae {new.ae:g}")
    print(
        f"quantiles from {split['quantile_images']} good images, threshold from "
        f"{split['threshold_images']}" + (" (the same images)" if split["same_images"] else "")
    )
    fr = at["false_rejects"]
    print(
        f"false rejects seen {fr['count']}/{fr['of']} (95 % CI {fr['rate_95ci'][0]:.3g} "
        f"to {fr['rate_95ci'][1]:.3g})"
    )
    expected = policy.expected_false_reject_rate_95ci
    if expected is not None:
        print(
            f"false-reject rate to expect on new good parts {expected[0]:.3g} to "
            f"{expected[1]:.3g} (95 %; target {policy.target_false_reject_rate:g})"
        )
    if policy.small_sample:
        print("WARNING: too few good images to resolve the target rate (see the notes)")
    if "escapes" in at:
        es = at["escapes"]
        print(
            f"escapes seen {es['count']}/{es['of']} (95 % CI {es['rate_95ci'][0]:.3g} "
            f"to {es['rate_95ci'][1]:.3g})"
        )
    for name, cand in policy.candidates.items():
        extra = f", escapes {cand['escapes']}" if "escapes" in cand else ""
        print(
            f"  {name:<12} threshold {cand['threshold']:.6g}: false rejects "
            f"{cand['false_rejects']}{extra}"
        )
    check = child.calibration.get("map_weights_check")
    if check:
        print(
            f"image AUROC of these {check['defective_images']} defects against "
            f"{check['good_images']} good images, by the map weights (--map-weights ST,AE):"
        )
        for row in check["rows"]:
            ci = row["image_auroc_95ci"]
            mark = "  (this bundle's)" if (row["st"], row["ae"]) == (new.st, new.ae) else ""
            print(
                f"  {row['st']:g},{row['ae']:g}  {row['image_auroc']:.3f}"
                + (f" ({ci[0]:.3f} to {ci[1]:.3f})" if ci else "")
                + mark
            )
    for note in policy.notes:
        print(f"note: {note}")
    return EXIT_OK


__all__ = ["add_calibrate_parser", "add_eval_parser", "cmd_calibrate", "cmd_eval"]
