"""`edge-ad inspect`, `edge-ad bundle info|verify` and `edge-ad optimize`: the commands
that need only the runtime (no torch)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_sdk.cli_options import (
    EXIT_ERROR_VERDICT,
    EXIT_NOK,
    EXIT_OK,
    print_json,
)
from edge_sdk.errors import EdgeADError
from edge_sdk.images import list_images, read_image
from edge_sdk.runtime.options import add_engine_options


def add_runtime_parsers(sub: Any) -> None:
    """inspect, bundle info|verify and optimize."""
    p = sub.add_parser(
        "inspect",
        help="inspect image files with a bundle",
        description="Inspect images; write overlays and results.jsonl to --out.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--bundle", required=True, help="the *.bundle file or directory")
    p.add_argument("--out", help="folder for overlays and results.jsonl")
    add_engine_options(p)
    p.add_argument("--batch", type=int, default=1, help="images per graph run")
    p.add_argument("--json", action="store_true", help="one JSON line per image on stdout")
    p.set_defaults(func=cmd_inspect)

    pb = sub.add_parser("bundle", help="look into a bundle").add_subparsers(
        dest="bundle_command", required=True, metavar="ACTION"
    )
    info = pb.add_parser("info", help="what the bundle holds")
    info.add_argument("bundle")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_bundle_info)
    verify = pb.add_parser("verify", help="check hashes, graphs and manifest; run each graph")
    verify.add_argument("bundle")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_bundle_verify)

    op = sub.add_parser(
        "optimize",
        help="add int8 / fp16 graph variants behind a parity gate",
        description="Write a new bundle with faster graph variants; each is "
        "refused if it flips a verdict on the given images.",
    )
    op.add_argument("--bundle", required=True)
    op.add_argument("--good", required=True, help="good images: int8 calibration and parity")
    op.add_argument("--bad", help="defective images: parity and AUROC change")
    op.add_argument("--out", required=True)
    op.add_argument("--int8", action="store_true", help="int8 for CPUs (default)")
    op.add_argument("--fp16", action="store_true", help="fp16 for GPUs")
    op.add_argument("--allow-flips", action="store_true", help="write even if verdicts flip")
    op.add_argument("--name", help="name of the new bundle")
    op.add_argument("--json", action="store_true")
    op.set_defaults(func=cmd_optimize)


def find_images(paths: Sequence[str]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in named folders."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found.extend(list_images(path))
        elif path.exists():
            found.append(path)
        else:
            raise EdgeADError(f"{path}: no such image file or folder")
    return found


def _unique_name(path: Path, used: set[str]) -> str:
    name = f"{path.stem}.jpg"
    k = 1
    while name in used:
        name = f"{path.stem}-{k}.jpg"
        k += 1
    used.add(name)
    return name


def cmd_inspect(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from edge_sdk.records import Verdict
    from edge_sdk.runtime.inspector import Inspector
    from edge_sdk.runtime.overlay import write_image

    images = find_images(args.images)
    if not images:
        raise EdgeADError(f"no images found in {', '.join(args.images)}")
    out_dir = Path(args.out).expanduser().absolute() if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    inspector = Inspector.open(
        args.bundle,
        device=args.device,
        variant=args.variant,
        threads=args.threads,
        max_batch=args.batch,
        recheck=args.recheck,
    )
    if not args.json:
        print(
            f"bundle {inspector.manifest.name}: {inspector.engine.variant} graph on "
            f"{inspector.provider}, threshold {inspector.image_threshold:.4f}",
            file=sys.stderr,
        )
    counts = {v: 0 for v in Verdict}
    used_names: set[str] = set()
    results_file = (out_dir / "results.jsonl").open("w") if out_dir else None
    try:
        for start in range(0, len(images), args.batch):
            chunk = images[start : start + args.batch]
            loaded = [cv2.imread(str(p), cv2.IMREAD_ANYCOLOR) for p in chunk]
            # An unreadable file still gets its own ERROR line (imread returns None).
            arrays = [a if a is not None else np.zeros((0, 0), np.uint8) for a in loaded]
            results = inspector.inspect_batch(arrays, frame_ids=range(start, start + len(chunk)))
            for path, image, raw, result in zip(chunk, arrays, loaded, results, strict=True):
                if raw is None:
                    result = _unreadable(result, path)
                counts[result.verdict] += 1
                record: dict[str, Any] = {"path": str(path), **result.to_dict()}
                if out_dir is not None and raw is not None:
                    name = _unique_name(path, used_names)
                    write_image(out_dir / name, inspector.overlay(image, result))
                    record["overlay"] = name
                if results_file is not None:
                    results_file.write(json.dumps(record) + "\n")
                if args.json:
                    print(json.dumps(record))
                else:
                    score = "-" if result.error else f"{result.score:.4f}"
                    extra = f"  ({result.error})" if result.error else ""
                    print(
                        f"{result.verdict.value:<5} {score:>8}  "
                        f"{result.latency.total_ms:7.1f} ms  {path}{extra}"
                    )
    finally:
        if results_file is not None:
            results_file.close()
    if not args.json:
        summary = ", ".join(f"{counts[v]} {v.value}" for v in Verdict)
        where = f"; overlays and results.jsonl in {out_dir}" if out_dir else ""
        print(f"{len(images)} images: {summary}{where}", file=sys.stderr)
    if counts[Verdict.ERROR]:
        return EXIT_ERROR_VERDICT
    return EXIT_NOK if counts[Verdict.NOK] else EXIT_OK


def _unreadable(result: Any, path: Path) -> Any:
    from dataclasses import replace

    return replace(result, error=f"cannot read image file {path}")


def _read_images(folder: str | None) -> list[Any]:
    return [read_image(path) for path in find_images([folder])] if folder else []


def cmd_optimize(args: argparse.Namespace) -> int:
    from edge_sdk.runtime.variants import VariantKind, add_variant

    good, bad = _read_images(args.good), _read_images(args.bad)
    chosen: list[tuple[VariantKind, bool]] = [("int8", args.int8), ("fp16", args.fp16)]
    kinds = [k for k, on in chosen if on] or ["int8"]
    source = args.bundle
    reports = {}
    for i, kind in enumerate(kinds):
        last = i == len(kinds) - 1
        out = args.out if last else str(Path(args.out).with_suffix(f".{kind}.tmp.bundle"))
        path, reports[kind] = add_variant(
            source, out, kind=kind, good=good, bad=bad, allow_flips=args.allow_flips, name=args.name
        )
        if source != args.bundle:
            Path(source).unlink()
        source = str(path)
    if args.json:
        print_json(reports)
    else:
        for kind, rep in reports.items():
            print(
                f"{kind}: {rep['verdict_flips']} verdict flips on {rep['images']} images, "
                f"largest map difference {rep['max_map_difference']:.4g}"
                + (f", AUROC change {rep['auroc_change']:+.4f}" if "auroc_change" in rep else "")
            )
        print(f"wrote {args.out}")
    return EXIT_OK


def cmd_bundle_info(args: argparse.Namespace) -> int:
    from edge_sdk.runtime.bundle import Bundle, describe
    from edge_sdk.runtime.manifest import ThresholdPolicy

    info = describe(Bundle.open(args.bundle))
    if args.json:
        print_json(info)
        return EXIT_OK
    print(f"{info['name']}  ({info['format']}, {info['architecture']})")
    print(f"  path        {info['path']}")
    print(f"  created     {info['created']} by {info['created_by'] or '?'}")
    if info["description"]:
        print(f"  description {info['description']}")
    if info["parent"]:
        print(f"  parent      {info['parent']}")
    inp = info["input"]
    print(
        f"  input       {inp['name']} [N,{inp['channels']},{inp['height']},{inp['width']}] "
        f"{inp['dtype']} {inp['color_order']}, resize {inp['resize']}"
    )
    for variant, ref in info["graphs"].items():
        print(f"  graph       {variant:<5} {ref['file']}  sha256 {ref['sha256'][:16]}...")
    norm = info["normalization"]
    print(
        f"  quantiles   st qa={norm['st']['qa']:.6g} qb={norm['st']['qb']:.6g}   "
        f"ae qa={norm['ae']['qa']:.6g} qb={norm['ae']['qb']:.6g}   pad {norm['pad']} "
        f"({norm['pad_mode']})"
    )
    weights = norm["weights"]
    print(f"  map weights st {weights['st']:g}, ae {weights['ae']:g}")
    thr = info["threshold"]
    record = ThresholdPolicy.model_validate(thr["policy"])
    policy = record.method or "unspecified"
    print(f"  threshold   image {thr['image']:.6g}, pixel {thr['pixel']:.6g} ({policy})")
    target = record.target_false_reject_rate
    if target is not None:
        line = f"  target      false-reject rate {target:g} on {record.images or '?'} good images"
        expected = record.expected_false_reject_rate_95ci
        if expected is not None:
            line += f", expected {expected[0]:.3g} to {expected[1]:.3g} (95 %)"
        print(line)
    if record.small_sample:
        print("  WARNING     too few good images for the target:")
    for note in record.notes:
        print(f"  note        {note}")
    return EXIT_OK


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from edge_sdk.runtime.verify import verify_bundle

    report = verify_bundle(args.bundle)
    if args.json:
        print_json(report)
    else:
        for check in report["checks"]:
            print(f"ok    {check}")
        print(f"{args.bundle}: bundle is valid")
    return EXIT_OK
