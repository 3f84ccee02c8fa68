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
