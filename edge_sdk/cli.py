"""The `edge-ad` command line: the parser wiring and `main`. Each part owns its commands
(`runtime/commands.py`: inspect, bundle, optimize; `line/commands.py`: run; `tools/`:
bench, doctor, the demo; `sources/`, `training/`, `evaluation/`: the rest). The exit
codes are in `edge_sdk.cli_options`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from edge_sdk.cli_options import EXIT_FAILED, EXIT_INTERRUPTED
from edge_sdk.errors import EdgeADError

log = logging.getLogger("edge_sdk.cli")


def build_parser() -> argparse.ArgumentParser:
    from edge_sdk import __version__
    from edge_sdk.evaluation.commands import add_calibrate_parser, add_eval_parser
    from edge_sdk.line.commands import add_run_parser
    from edge_sdk.runtime.commands import add_runtime_parsers
    from edge_sdk.sources.commands import add_cameras_parser
    from edge_sdk.tools.commands import add_tools_parsers
    from edge_sdk.training.commands import add_train_parser
    from edge_sdk.training.teacher_commands import add_pretrain_teacher_parser

    parser = argparse.ArgumentParser(
        prog="edge-ad", description="EfficientAD anomaly detection for production lines."
    )
    parser.add_argument("--version", action="version", version=f"edge-ad {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_runtime_parsers(sub)
    add_run_parser(sub)
    add_cameras_parser(sub)
    add_train_parser(sub)
    add_pretrain_teacher_parser(sub)
    add_eval_parser(sub)
    add_calibrate_parser(sub)
    add_tools_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "inspect" and args.batch < 1:
        parser.error("--batch must be at least 1")
    if args.command == "run" and args.demo:
        from edge_sdk.tools.commands import cmd_demo

        args.func = cmd_demo
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except EdgeADError as exc:
        print(f"edge-ad: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
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
