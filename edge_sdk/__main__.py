"""`python -m edge_sdk` is the `edge-ad` command."""

import sys

from edge_sdk.cli import main

sys.exit(main())
