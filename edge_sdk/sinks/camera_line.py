"""A pulse on one of the camera's digital output lines for each reject (or each pass):
the cheapest signal to the line where the camera is wired to an ejector or a PLC input.

It drives the line through the GenICam SFNC features that every camera with I/O lines
has: LineSelector, LineMode=Output, LineSource=UserOutputN, UserOutputSelector and
UserOutputValue. `prepare()` configures them once the camera is open (and the line
service calls it before READY, so a camera without the feature fails the start with the
feature named), and again after a reconnect.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from edge_sdk.records import Inspection
from edge_sdk.sinks.config import CameraLineSinkConfig

log = logging.getLogger(__name__)


class CameraLineSink:
    """Pulses `config.line` for `config.pulse_ms` on every reject (or every pass)."""

    def __init__(self, source: Any, config: CameraLineSinkConfig, *, name: str) -> None:
        self.name = name
        self.source = source
        self.config = config
        self._prepared_for: Any = None  # the node map the line was configured on
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Configure the output line; raises FeatureError naming a missing feature."""
        from edge_sdk.sources.profiles import set_feature

        node_map = self.source.node_map
        camera = str(self.source.camera_id)
        for feature, value in (
            ("LineSelector", self.config.line),
            ("LineMode", "Output"),
            ("LineSource", self.config.user_output),
            ("UserOutputSelector", self.config.user_output),
            ("UserOutputValue", False),
        ):
            set_feature(node_map, feature, value, camera=camera, key=f"sinks.{self.name}")
        self._prepared_for = node_map

    def __call__(self, inspection: Inspection) -> None:
        reject = inspection.result.verdict.is_reject
        if reject != (self.config.on == "reject"):
            return
        with self._lock:
            node_map = self.source.node_map  # raises while the camera is reconnecting
            if node_map is not self._prepared_for:
                self.prepare()  # a reconnected camera forgot the line settings
            node_map.UserOutputSelector.value = self.config.user_output
            node_map.UserOutputValue.value = True
            try:
                time.sleep(self.config.pulse_ms / 1e3)
            finally:
                node_map.UserOutputValue.value = False

    def close(self) -> None:
        try:
            self.source.node_map.UserOutputValue.value = False
        except Exception as exc:  # the camera may be gone already
            log.debug("camera line %s: could not reset on close: %s", self.name, exc)
