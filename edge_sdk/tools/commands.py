"""`edge-ad bench`, `edge-ad doctor` and `edge-ad run --demo`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge_sdk.cli_options import EXIT_OK, print_json
from edge_sdk.runtime.engine import DEVICES


def add_tools_parsers(sub: Any) -> None:
    """bench and doctor."""
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

    d = sub.add_parser("doctor", help="providers, GPU, GenTL producers, permissions")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)


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
        print_json(report)
    else:
        print(format_report(report))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_sdk.tools.doctor import collect, format_report

    report = collect()
    if args.json:
        print_json(report)
    else:
        print(format_report(report))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """`edge-ad run --demo`: the line on the simulated camera with the demo bundle (built
    on the first run), defects made every few seconds, and the score of the run."""
    from edge_sdk.line.commands import run_and_report, run_overrides
    from edge_sdk.line.config import load_config
    from edge_sdk.tools import demo
    from edge_sdk.training.commands import ProgressPrinter

    out_dir = Path(args.out or "edge-ad-demo").expanduser().absolute()
    previous = demo.fresh_output(out_dir)
    if previous is not None:
        print(f"demo: the last demo's output moved to {previous}", file=sys.stderr)
    if not demo.demo_bundle_path().exists():
        print(
            "demo: building the demo bundle (first run only, about a minute on 2 cores) ...",
            file=sys.stderr,
        )
    bundle = demo.demo_bundle(progress=ProgressPrinter(sys.stderr))
    given = {k: v for k, v in run_overrides(args).items() if v is not None}
    config, _ = load_config(
        args.config, overrides={**demo.demo_overrides(out_dir, bundle), **given}
    )
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
    code, summary = run_and_report(args, config, on_started)
    lat = summary.snapshot.latency_ms
    # Where demo_overrides sends them (and the message above says).
    results, archive = out_dir / "results.jsonl", out_dir / "archive"
    records = [json.loads(line) for line in results.read_text().splitlines() if line]
    score = demo.score_run(records, injectors[0].windows if injectors else [])
    print(f"demo: {score.summary()}", file=sys.stderr)
    print(
        f"demo: latency p50 infer {lat.get('infer', {}).get('p50', 0):.1f} ms, "
        f"acquired-to-verdict {lat.get('total', {}).get('p50', 0):.1f} ms; look at "
        f"{archive} (overlays) and {results}",
        file=sys.stderr,
    )
    return code
