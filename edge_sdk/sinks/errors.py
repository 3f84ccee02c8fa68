"""What a sink raises when it cannot deliver.

    EdgeADError
     +-- SinkError              delivery failed; the runner retries it with backoff
          +-- PermanentSinkError  retrying cannot help; the runner drops the item at once

Any other exception from a sink is treated like `SinkError` (retried): a sink does not
have to know about these classes, they only let it say "do not retry".
"""

from __future__ import annotations

from edge_sdk.errors import EdgeADError


class SinkError(EdgeADError):
    """A sink could not deliver one inspection (the PLC or broker is unreachable, ...)."""


class PermanentSinkError(SinkError):
    """Retrying this inspection cannot help (e.g. the archive is below its free-space
    floor): the runner counts it as dropped without retrying."""
