"""What every command of `edge-ad` shares: the exit codes (documented in the README,
relied on by scripts) and JSON output. Imports nothing of edge_sdk, so any part's
commands may use it.

    0  every image passed (or the command succeeded)
    1  at least one image was rejected (NOK), none failed
    2  the command line was wrong
    3  at least one image got verdict ERROR
    4  the command could not start or failed (bundle, engine, output folder)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import json
from typing import Any

EXIT_OK, EXIT_NOK, EXIT_USAGE, EXIT_ERROR_VERDICT, EXIT_FAILED = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130


def print_json(data: Any) -> None:
    """`data` as indented JSON on stdout (paths and the like as strings)."""
    print(json.dumps(data, indent=2, default=str))


def map_weights(text: str) -> tuple[float, float]:
    """``--map-weights ST,AE``: the weights of the student's and the autoencoder's maps in a
    part's map (the reference: 0.5,0.5; ``1,0`` reads the student map alone).

    >>> map_weights("1,0"), map_weights("0.75, 0.25")
    ((1.0, 0.0), (0.75, 0.25))
    """
    import argparse
    import math

    parts = text.split(",")
    try:
        st, ae = (float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two numbers ST,AE (e.g. 1,0 or 0.5,0.5), got {text!r}"
        ) from None
    if not (math.isfinite(st) and math.isfinite(ae)) or st < 0 or ae < 0 or st + ae <= 0:
        raise argparse.ArgumentTypeError(
            f"the map weights must be finite, not negative, and not both 0, got {text!r}"
        )
    return st, ae
