"""The `edge-ad` command line.

Exit codes (documented in the README, relied on by scripts):
    0  every image passed (or the command succeeded)
    1  at least one image was rejected (NOK), none failed
    2  the command line was wrong
    3  at least one image got verdict ERROR
    4  the command could not start or failed (bundle, engine, output folder)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_sdk.cli_options import add_engine_options
from edge_sdk.errors import EdgeADError
from edge_sdk.images import list_images
from edge_sdk.runtime.engine import DEVICES

EXIT_OK, EXIT_NOK, EXIT_USAGE, EXIT_ERROR_VERDICT, EXIT_FAILED = 0, 1, 2, 3, 4

log = logging.getLogger("edge_sdk.cli")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


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


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from edge_sdk.line.config import load_config
    from edge_sdk.line.service import run_line, run_warnings, sink_lines, status_line

    if args.out and not args.demo:
        # Without --demo the sinks say where results go; an ignored --out would lose them.
        print(
            "edge-ad run: --out is for --demo; without it results go where the sinks say "
            "(line.yaml `sinks:`, e.g. {type: jsonl, path: results.jsonl})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    overrides: dict[str, Any] = {
        "camera": args.camera,
        "bundle": args.bundle,
        "device": args.device,
        "mode": args.mode,
        "deadline_ms": args.deadline_ms,
    }
    if args.folder:
        overrides["source"] = "folder"
        overrides["folder"] = {"path": args.folder, "rate_hz": args.rate_hz, "loop": args.loop}
    if args.health_port is not None:
        overrides["health"] = {"port": args.health_port}
    on_started = None
    if args.demo:
        from edge_sdk.tools import demo

        out_dir = Path(args.out or "edge-ad-demo").expanduser().absolute()
        previous = demo.fresh_output(out_dir)
        if previous is not None:
            print(f"demo: the last demo's output moved to {previous}", file=sys.stderr)
        if not demo.demo_bundle_path().exists():
            print(
                "demo: building the demo bundle (first run only, about a minute on 2 cores) ...",
                file=sys.stderr,
            )
        from edge_sdk.training.commands import ProgressPrinter

        bundle = demo.demo_bundle(progress=ProgressPrinter(sys.stderr))
        overrides = {
            **demo.demo_overrides(out_dir, bundle),
            **{k: v for k, v in overrides.items() if v is not None},
        }
        args.duration_s = args.duration_s or 30.0
        injectors: list[Any] = []

        def on_started(pipeline: Any) -> Any:
            injector = demo.DefectInjector(pipeline.source)
            injector.start()
            injectors.append(injector)
            return injector.stop

        print(
            f"demo: running the simulated camera for {args.duration_s:g} s; every 3 s "
            f"the square grows (a defective part); results go to {out_dir / 'results.jsonl'}, "
            f"overlays of every reject and every 10th pass to {out_dir / 'archive'}",
            file=sys.stderr,
        )
    config, _ = load_config(args.config, overrides=overrides)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.warning("signal %d: finishing the frames in flight, then stopping", signum)
        stop.set()

    # The service owns its signals (the library never installs handlers).
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    summary = run_line(
        config,
        stop=stop,
        duration_s=args.duration_s,
        max_frames=args.max_frames,
        on_started=on_started,
    )
    snap = summary.snapshot
    if args.json:
        _print_json({**snap, "wall_s": summary.wall_s, "failed": summary.failed})
    else:
        print(
            f"edge-ad run: {status_line(snap)} in {summary.wall_s:.1f} s "
            f"({snap['deadline_misses']} deadline misses, {snap['source']['lost']} lost, "
            f"{snap['source']['reconnects']} reconnects)",
            file=sys.stderr,
        )
        for line in sink_lines(snap):
            print(f"edge-ad run: {line}", file=sys.stderr)
        for line in run_warnings(snap):
            print(f"edge-ad run: WARNING: {line}", file=sys.stderr)
    if args.demo:
        lat = snap["latency_ms"]
        results = Path(config.sinks[0]["path"])
        records = [json.loads(line) for line in results.read_text().splitlines() if line]
        score = demo.score_run(records, injectors[0].windows if injectors else [])
        print(f"demo: {score.summary()}", file=sys.stderr)
        print(
            f"demo: latency p50 infer {lat.get('infer', {}).get('p50', 0):.1f} ms, "
            f"acquired-to-verdict {lat.get('total', {}).get('p50', 0):.1f} ms; look at "
            f"{config.sinks[1]['root']} (overlays) and {results}",
            file=sys.stderr,
        )
    if summary.failed:
        print(f"edge-ad: error: the frame source failed: {summary.failed}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return height, width


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_sdk.tools.bench import BenchOptions, format_report, run_bench

    options = BenchOptions(
        devices=tuple(args.devices or ()),
        variants=tuple(args.variants or ()),
        batches=args.batches,
        rounds=args.rounds,
        frame=args.frame,
        threads=args.threads,
        reference=not args.no_reference,
    )
    report = run_bench(args.bundle, options)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        _print_json(report)
    else:
        print(format_report(report))
    return EXIT_OK


def _read_images(folder: str | None) -> list[Any]:
    import cv2

    if not folder:
        return []
    images = []
    for path in find_images([folder]):
        image = cv2.imread(str(path), cv2.IMREAD_ANYCOLOR)
        if image is None:
            raise EdgeADError(f"{path}: cannot be read as an image")
        images.append(image)
    return images


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
        _print_json(reports)
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

    info = describe(Bundle.open(args.bundle))
    if args.json:
        _print_json(info)
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
    thr = info["threshold"]
    record = thr["policy"]
    policy = record.get("method", "unspecified")
    print(f"  threshold   image {thr['image']:.6g}, pixel {thr['pixel']:.6g} ({policy})")
    target = record.get("target_false_reject_rate")
    if target is not None:
        line = (
            f"  target      false-reject rate {target:g} on {record.get('images', '?')} good images"
        )
        expected = record.get("expected_false_reject_rate_95ci")
        if expected is not None:
            line += f", expected {expected[0]:.3g} to {expected[1]:.3g} (95 %)"
        print(line)
    if record.get("small_sample"):
        print("  WARNING     too few good images for the target:")
    for note in record.get("notes", []):
        print(f"  note        {note}")
    return EXIT_OK


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from edge_sdk.runtime.verify import verify_bundle

    report = verify_bundle(args.bundle)
    if args.json:
        _print_json(report)
    else:
        for check in report["checks"]:
            print(f"ok    {check}")
        print(f"{args.bundle}: bundle is valid")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_sdk.tools.doctor import collect, format_report

    report = collect()
    if args.json:
        _print_json(report)
    else:
        print(format_report(report))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from edge_sdk import __version__

    parser = argparse.ArgumentParser(
        prog="edge-ad", description="EfficientAD anomaly detection for production lines."
    )
    parser.add_argument("--version", action="version", version=f"edge-ad {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    r = sub.add_parser(
        "run",
        help="run the line: camera -> model -> signals",
        description="Inspect every frame of a camera (or folder) and signal "
        "the verdicts; stops cleanly on SIGTERM.",
    )
    r.add_argument("--camera", help="camera alias, serial, user-defined name or index")
    r.add_argument("--bundle", help="the *.bundle file or directory")
    r.add_argument("--config", help="line config YAML (see edge_sdk/line/config.py)")
    r.add_argument("--device", choices=list(DEVICES))
    r.add_argument("--mode", choices=["per_part", "free_run"])
    r.add_argument("--deadline-ms", type=float, help="acquisition-to-verdict deadline")
    r.add_argument("--folder", help="replay the images of a folder instead of a camera")
    r.add_argument("--rate-hz", type=float, help="with --folder: frames per second")
    r.add_argument("--loop", action="store_true", help="with --folder: replay forever")
    r.add_argument("--health-port", type=int, help="health endpoint port (0: any free)")
    r.add_argument("--duration-s", type=float, help="stop after this many seconds")
    r.add_argument("--max-frames", type=int, help="stop after this many results")
    r.add_argument("--json", action="store_true", help="print the final summary as JSON")
    r.add_argument(
        "--demo",
        action="store_true",
        help="built-in defaults: simulated camera, demo bundle (built on first "
        "run), made-up defects; needs the train and camera extras",
    )
    r.add_argument(
        "--out", help="with --demo: folder for results and overlays (default ./edge-ad-demo)"
    )
    r.set_defaults(func=cmd_run)

    from edge_sdk.evaluation.commands import add_calibrate_parser, add_eval_parser
    from edge_sdk.sources.commands import add_cameras_parser
    from edge_sdk.training.commands import add_train_parser
    from edge_sdk.training.teacher_commands import add_pretrain_teacher_parser

    add_cameras_parser(sub)
    add_train_parser(sub)
    add_pretrain_teacher_parser(sub)
    add_eval_parser(sub)
    add_calibrate_parser(sub)

    bb = sub.add_parser("bench", help="latency and throughput, against a PyTorch reference")
    bb.add_argument("--bundle", required=True)
    bb.add_argument(
        "--device",
        dest="devices",
        action="append",
        choices=[d for d in DEVICES if d != "auto"],
        help="provider to measure (repeatable; default: every one installed)",
    )
    bb.add_argument(
        "--variant",
        dest="variants",
        action="append",
        help="graph variant to measure (repeatable; default: all in the bundle)",
    )
    bb.add_argument("--batches", type=_ints, default=(1, 8), help="e.g. 1,8")
    bb.add_argument("--rounds", type=int, default=20)
    bb.add_argument("--frame", type=_size, default=(256, 256), help="camera frame WxH")
    bb.add_argument("--threads", type=int, default=0)
    bb.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference")
    bb.add_argument("--out", help="write the report as JSON to this file")
    bb.add_argument("--json", action="store_true")
    bb.set_defaults(func=cmd_bench)

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

    d = sub.add_parser("doctor", help="providers, GPU, GenTL producers, permissions")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "inspect" and args.batch < 1:
        parser.error("--batch must be at least 1")
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except EdgeADError as exc:
        print(f"edge-ad: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a file, disk or socket the command needed: say which
        print(f"edge-ad: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception:
        # A bug: the traceback is for the report, and the exit code must not read as a
        # verdict (1 is NOK).
        log.exception("edge-ad: unexpected error")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
