"""`edge-ad run`: the line service from the command line. (`--demo` is wired to
`edge_sdk.tools.commands.cmd_demo`, which builds its config and calls `run_and_report`.)"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_sdk.cli_options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, print_json
from edge_sdk.runtime.options import add_engine_options

if TYPE_CHECKING:
    from edge_sdk.line.config import LineConfig

log = logging.getLogger(__name__)


def add_run_parser(sub: Any) -> argparse.ArgumentParser:
    r = sub.add_parser(
        "run",
        help="run the line: camera -> model -> signals",
        description="Inspect every frame of a camera (or folder) and signal "
        "the verdicts; stops cleanly on SIGTERM.",
    )
    r.add_argument("--camera", help="camera alias, serial, user-defined name or index")
    r.add_argument("--bundle", help="the *.bundle file or directory")
    r.add_argument("--config", help="line config YAML (see edge_sdk/line/config.py)")
    add_engine_options(r, from_config=True)
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
    return r


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's part of the config (None: not given, the file decides)."""
    overrides: dict[str, Any] = {
        "camera": args.camera,
        "bundle": args.bundle,
        "engine": {"device": args.device, "variant": args.variant, "threads": args.threads},
        "recheck": args.recheck,
        "pipeline": {"mode": args.mode, "deadline_ms": args.deadline_ms},
    }
    if args.folder:
        overrides["source"] = "folder"
        overrides["folder"] = {"path": args.folder, "rate_hz": args.rate_hz, "loop": args.loop}
    if args.health_port is not None:
        overrides["health"] = {"port": args.health_port}
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    from edge_sdk.line.config import load_config

    if args.out:
        # Without --demo the sinks say where results go; an ignored --out would lose them.
        print(
            "edge-ad run: --out is for --demo; without it results go where the sinks say "
            "(line.yaml `sinks:`, e.g. {type: jsonl, path: results.jsonl})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    config, _ = load_config(args.config, overrides=run_overrides(args))
    return run_and_report(args, config)[0]


def run_and_report(
    args: argparse.Namespace,
    config: LineConfig,
    on_started: Callable[[Any], Any] | None = None,
) -> tuple[int, Any]:
    """Run the line until stopped (SIGTERM, SIGINT, --duration-s, --max-frames, the end of
    a folder), print its summary; returns the exit code and the run's summary."""
    import signal
    import threading

    from edge_sdk.line.service import run_line, run_warnings, sink_lines, status_line

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
        print_json({**snap.to_dict(), "wall_s": summary.wall_s, "failed": summary.failed})
    else:
        print(
            f"edge-ad run: {status_line(snap)} in {summary.wall_s:.1f} s "
            f"({snap.deadline_misses} deadline misses, {snap.source.lost} lost, "
            f"{snap.source.reconnects} reconnects)",
            file=sys.stderr,
        )
        for line in sink_lines(snap):
            print(f"edge-ad run: {line}", file=sys.stderr)
        for line in run_warnings(snap):
            print(f"edge-ad run: WARNING: {line}", file=sys.stderr)
    if summary.failed:
        print(f"edge-ad: error: the frame source failed: {summary.failed}", file=sys.stderr)
        return EXIT_FAILED, summary
    return EXIT_OK, summary
