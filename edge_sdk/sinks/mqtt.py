"""MQTT (paho-mqtt 2.x): every result, the service's health, and a last will.

Topics, with ``P`` the `topic_prefix` and ``C`` the camera::

    P/C/result   one JSON record per result (`edge_sdk.sinks.record`), QoS 1, not retained
    P/C/health   retained, QoS 1: {"state": "online", ...} on connect and every
                 `health_interval_s`; {"state": "offline", ...} when we stop, and as the
                 last will, which the broker publishes if we vanish without a goodbye

Delivery is at least once, and counted honestly: a result counts as delivered only when
the broker's PUBACK arrives within `publish_timeout_s`. While disconnected the sink
raises instead of queueing inside paho, so the `SinkRunner` retries, counts and (past its
deadline) drops: its queue is the only one, bounded, and its drop policy keeps rejects
over passes. Had paho queued while offline, a publish would "succeed" into process memory
and a crash would lose rejects that the runner counted as delivered. A retry after a PUBACK
lost in a dropped connection may deliver a result twice; consumers key on
(camera, frame_id).

paho's own network thread reconnects (`reconnect_min_s` doubling to `reconnect_max_s`).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any

from edge_sdk.errors import ConfigError, require
from edge_sdk.records import Inspection
from edge_sdk.sinks.config import MqttSinkConfig
from edge_sdk.sinks.errors import SinkError
from edge_sdk.sinks.record import iso_utc, result_record

__all__ = ["MqttSink"]

logger = logging.getLogger(__name__)

_OUR_OWN_QUEUE_BOUND = 1000  # in flight inside paho; publishing offline never queues


class MqttSink:
    """Publishes results and health for one camera (topics in the module docstring).

    The constructor starts paho's network thread and returns at once; the connection
    comes up in the background, and deliveries before it raise `SinkError`.
    """

    needs_pixels = False  # the record and the verdict only

    def __init__(
        self, config: MqttSinkConfig, *, camera: str | None = None, name: str | None = None
    ) -> None:
        require("paho.mqtt", extra="signals", feature="the MQTT sink")
        import paho.mqtt.client as mqtt

        self.name = name or config.name or "mqtt"
        self.config = config
        self.camera = config.camera or camera
        if not self.camera:
            raise ConfigError(f"sink {self.name!r}: MQTT topics need a camera: set `camera`")
        base = f"{config.topic_prefix}/{self.camera}"
        self.result_topic = f"{base}/result"
        self.health_topic = f"{base}/health"
        self.tick_interval_s = config.health_interval_s
        self._health: dict[str, Any] = {"healthy": True}
        self._connected = threading.Event()
        client_id = config.client_id or f"edge-ad-{socket.gethostname()}-{self.camera}"
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
        )
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls_ca_file is not None:
            client.tls_set(ca_certs=str(config.tls_ca_file))
        # No timestamp in the will: it is composed now and published much later.
        will = json.dumps({"state": "offline", "camera": self.camera, "reason": "connection lost"})
        client.will_set(self.health_topic, will, qos=1, retain=True)
        client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(_OUR_OWN_QUEUE_BOUND)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        client.connect_async(config.host, config.port, keepalive=config.keepalive_s)
        client.loop_start()

    # -- the sink protocol ---------------------------------------------------------------
    def __call__(self, inspection: Inspection) -> None:
        self._publish(self.result_topic, json.dumps(result_record(inspection)), retain=False)

    def tick(self) -> None:
        """Publish the latest health (retained), if connected; skipped while offline."""
        if self._connected.is_set():
            self._publish(
                self.health_topic, self._state_payload("online", **self._health), retain=True
            )

    def set_service_health(self, healthy: bool, detail: dict[str, Any] | None = None) -> None:
        """What the next health message says (`detail` must be JSON-ready)."""
        self._health = {"healthy": bool(healthy), **(detail or {})}

    def close(self) -> None:
        """Say "offline" (retained), disconnect cleanly and stop paho's thread."""
        if self._connected.is_set():
            try:
                self._publish(
                    self.health_topic,
                    self._state_payload("offline", reason="stopped"),
                    retain=True,
                    timeout_s=min(1.0, self.config.publish_timeout_s),
                )
            except SinkError as exc:
                logger.warning("mqtt %s: could not say offline: %s", self.name, exc)
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho callbacks (paho's network thread) -----------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            logger.warning("mqtt %s: broker %s refused: %s", self.name, self._where(), reason)
            return
        logger.info("mqtt %s: connected to %s", self.name, self._where())
        client.publish(self.health_topic, self._state_payload("online", **self._health), 1, True)
        self._connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._connected.is_set():
            logger.warning("mqtt %s: disconnected from %s: %s", self.name, self._where(), reason)
        self._connected.clear()

    # -- helpers -------------------------------------------------------------------------
    def _publish(
        self, topic: str, payload: str, *, retain: bool, timeout_s: float | None = None
    ) -> None:
        if not self._connected.is_set():
            raise SinkError(f"not connected to MQTT broker {self._where()}")
        timeout_s = self.config.publish_timeout_s if timeout_s is None else timeout_s
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(timeout=timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise SinkError(f"MQTT broker {self._where()}: publish to {topic}: {exc}") from exc
        if not info.is_published():
            raise SinkError(
                f"MQTT broker {self._where()}: no PUBACK for {topic} within {timeout_s} s"
            )

    def _state_payload(self, state: str, **fields: Any) -> str:
        record = {"state": state, "camera": self.camera, "timestamp": iso_utc(time.time_ns())}
        return json.dumps({**record, **fields})

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"
