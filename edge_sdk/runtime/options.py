"""The engine flags, declared once for every command that opens an Inspector (inspect,
eval, calibrate, run): --device, --variant, --threads, --no-recheck."""

from __future__ import annotations

import argparse

from edge_sdk.runtime.engine import DEVICES


def add_engine_options(parser: argparse.ArgumentParser, *, from_config: bool = False) -> None:
    """The flags as Inspector.open takes them. With `from_config` (edge-ad run) they
    default to None, so that line.yaml and the environment decide unless a flag is given."""
    parser.add_argument(
        "--device",
        default=None if from_config else "auto",
        choices=list(DEVICES),
        help="execution provider (default: auto, the fastest installed)",
    )
    parser.add_argument(
        "--variant", help="graph variant (fp32, fp16, int8); default: best for device"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None if from_config else 0,
        help="inference threads (0: one per core)",
    )
    parser.add_argument(
        "--no-recheck",
        dest="recheck",
        action="store_const",
        const=False,
        default=None if from_config else True,
        help="let an int8/fp16 variant decide near-threshold parts alone (default: float32 "
        "re-decides them)",
    )
