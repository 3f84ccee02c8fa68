"""Command-line options shared by the commands that open an Inspector (inspect, eval)."""

from __future__ import annotations

import argparse

from edge_sdk.runtime.engine import DEVICES


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """--device, --variant, --threads and --no-recheck, as Inspector.open takes them."""
    parser.add_argument("--device", default="auto", choices=list(DEVICES))
    parser.add_argument(
        "--variant", help="graph variant (fp32, fp16, int8); default: best for device"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="inference threads (0: one per core)"
    )
    parser.add_argument(
        "--no-recheck",
        dest="recheck",
        action="store_false",
        help="let an int8/fp16 variant decide near-threshold parts alone (default: float32 "
        "re-decides them)",
    )
