"""A small HTTP endpoint for the line's health, on localhost by default:

/metrics      Prometheus text: frames, verdicts, errors, latency, sink failures
/status       the pipeline's snapshot as JSON
/overlay.jpg  the latest inspected frame with its heatmap (rendered on request, so
              the inspection path never pays for it)
/healthz      200 while frames or ticks flow and the camera is there, 503 (and why)
              otherwise
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_sdk.errors import ConfigError
from edge_sdk.line.pipeline import Pipeline
from edge_sdk.line.snapshot import PipelineSnapshot
from edge_sdk.sinks.metrics import Family, prometheus_text, render

log = logging.getLogger(__name__)


def pipeline_metrics_text(snapshot: PipelineSnapshot) -> str:
    """The pipeline's snapshot in the Prometheus text exposition format."""
    families: list[Family] = []

    def metric(
        name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]
    ) -> None:
        families.append((f"edge_ad_{name}", kind, help_text, samples))

    metric("frames_total", "counter", "Frames acquired.", [({}, snapshot.frames)])
    metric(
        "results_total",
        "counter",
        "Results delivered, by verdict.",
        [({"verdict": v}, n) for v, n in snapshot.verdicts.items()],
    )
    metric(
        "deadline_misses_total",
        "counter",
        "Frames that missed their deadline (ERROR).",
        [({}, snapshot.deadline_misses)],
    )
    metric(
        "queue_overflows_total",
        "counter",
        "Frames failed because the queue was full.",
        [({}, snapshot.queue_overflows)],
    )
    metric(
        "dropped_free_run_total",
        "counter",
        "Frames replaced by newer ones (free run).",
        [({}, snapshot.dropped_free_run)],
    )
    metric("source_errors_total", "counter", "Frame source errors.", [({}, snapshot.source_errors)])
    metric(
        "lost_frames_total",
        "counter",
        "Gaps in camera frame ids (parts never seen).",
        [({}, snapshot.source.lost)],
    )
    metric(
        "camera_reconnects_total",
        "counter",
        "Camera reconnects.",
        [({}, snapshot.source.reconnects)],
    )
    metric(
        "source_connected",
        "gauge",
        "1 while the camera is connected, 0 while it is lost.",
        [({}, int(snapshot.source_connected))],
    )
    metric(
        "in_flight",
        "gauge",
        "Frames acquired and not yet given a result.",
        [({}, snapshot.in_flight)],
    )
    lat = snapshot.latency_ms
    metric(
        "latency_ms",
        "gauge",
        "Per-stage latency over recent frames (ms).",
        [({"stage": s, "quantile": q}, v[q]) for s, v in lat.items() for q in ("p50", "p99")],
    )
    return render(families)


def metrics_text(pipeline: Pipeline) -> str:
    """The pipeline's metrics and every sink runner's (edge_sdk.sinks.metrics)."""
    healths = [h() for h in (getattr(s, "health", None) for s in pipeline.sinks) if h]
    return pipeline_metrics_text(pipeline.snapshot()) + prometheus_text(healths)


class HealthServer:
    """Serves /metrics, /status, /overlay.jpg and /healthz for one pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        host: str = "127.0.0.1",
        port: int = 8787,
        stale_after_s: float = 10.0,
        extra_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.stale_after_s = stale_after_s
        self.extra_status = extra_status
        self._overlay_cache: tuple[int, bytes] | None = None
        self._overlay_lock = threading.Lock()
        handler = self._handler()
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"health endpoint: cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(another edge-ad on this port? set health.port, or health.enabled: false)"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="edge-ad-health", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("health endpoint on http://%s:%d/", *self.address)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def healthy(self) -> bool:
        return self.pipeline.health(stall_after_s=self.stale_after_s)[0]

    def status(self) -> dict[str, Any]:
        snap = self.pipeline.snapshot().to_dict()
        snap["healthy"], snap["unhealthy_reason"] = self.pipeline.health(
            stall_after_s=self.stale_after_s
        )
        if self.extra_status is not None:
            snap.update(self.extra_status())
        return snap

    def overlay_jpeg(self) -> bytes | None:
        from edge_sdk.runtime.overlay import encode_jpeg

        latest = self.pipeline.latest
        if latest is None:
            return None
        with self._overlay_lock:
            key = id(latest)
            if self._overlay_cache is None or self._overlay_cache[0] != key:
                self._overlay_cache = (key, encode_jpeg(latest.overlay(), quality=85))
            return self._overlay_cache[1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                try:
                    if path == "/metrics":
                        body = metrics_text(server.pipeline).encode()
                        self._send(200, "text/plain; version=0.0.4", body)
                    elif path == "/status":
                        body = json.dumps(server.status(), default=str).encode()
                        self._send(200, "application/json", body)
                    elif path == "/overlay.jpg":
                        jpeg = server.overlay_jpeg()
                        if jpeg is None:
                            self._send(404, "text/plain", b"no frame inspected yet\n")
                        else:
                            self._send(200, "image/jpeg", jpeg)
                    elif path == "/healthz":
                        ok, why = server.pipeline.health(stall_after_s=server.stale_after_s)
                        body = b"ok\n" if ok else f"unhealthy: {why}\n".encode()
                        self._send(200 if ok else 503, "text/plain", body)
                    else:
                        self._send(
                            404, "text/plain", b"try /metrics, /status, /overlay.jpg, /healthz\n"
                        )
                except Exception as exc:
                    log.exception("health endpoint failed on %s", path)
                    self._send(500, "text/plain", f"{exc}\n".encode())

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("health: " + format, *args)

        return Handler
