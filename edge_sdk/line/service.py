"""The line service behind `edge-ad run`: build the source, inspector, sinks and health
endpoint from a `LineConfig`, run until told to stop, and talk to systemd on the way.

READY is sent only after the camera is open and the model warmed up; WATCHDOG only while
frames or acquisition ticks really flow (a stalled pipeline lets systemd restart us);
STATUS carries the counts. The caller owns signals: it sets `stop` from its handler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_sdk.errors import ConfigError
from edge_sdk.line.config import LineConfig, describe
from edge_sdk.line.notify import Notifier
from edge_sdk.line.pipeline import Mode, Pipeline, ResultSink
from edge_sdk.line.snapshot import PipelineSnapshot
from edge_sdk.runtime.inspector import Inspector
from edge_sdk.sources.base import FrameSource

log = logging.getLogger(__name__)


def build_source(config: LineConfig) -> FrameSource:
    """The frame source the config names (not opened yet)."""
    if config.source == "folder":
        from edge_sdk.sources.files import FolderSource

        if config.folder is None:
            raise ConfigError("source is 'folder' but the 'folder' section (path) is missing")
        return FolderSource(
            config.folder.path,
            rate_hz=config.folder.rate_hz,
            loop=config.folder.loop,
            camera_id=config.camera,
        )
    if config.source == "video":
        from edge_sdk.sources.files import VideoSource

        if config.video is None:
            raise ConfigError("source is 'video' but the 'video' section (uri) is missing")
        return VideoSource(config.video.uri, rate_hz=config.video.rate_hz, camera_id=config.camera)
    from edge_sdk.sources.genicam import GenICamSource
    from edge_sdk.sources.profiles import load_profile

    profile = load_profile(config.profile) if config.profile else None
    camera: str | int = int(config.camera) if config.camera.isdigit() else config.camera
    return GenICamSource(
        camera,
        profile=profile,
        aliases=dict(config.cameras),
        producer_paths=config.producers,
        include_simulator=config.include_simulator,
        camera_id=config.camera,
    )


def build_sinks(config: LineConfig, source: FrameSource | None = None) -> list[ResultSink]:
    """One runner (own thread and queue) per configured sink."""
    from edge_sdk.sinks.factory import build_runner

    return [build_runner(sink, camera=config.camera, source=source) for sink in config.sinks]


def prepare_sinks(sinks: list[ResultSink]) -> None:
    """Sinks that configure the camera (an output line) do it once it is open, so a
    missing feature fails the start, named, before READY."""
    for runner in sinks:
        prepare = getattr(getattr(runner, "sink", None), "prepare", None)
        if prepare is not None:
            prepare()


@dataclass(frozen=True)
class RunSummary:
    snapshot: PipelineSnapshot
    wall_s: float
    failed: str | None  # why the run ended on its own (source error), None for a clean stop


def status_line(snapshot: PipelineSnapshot) -> str:
    v = snapshot.verdicts
    infer, total = snapshot.p50_ms("infer"), snapshot.p50_ms("total")
    lat = f", infer p50 {infer:.1f} ms, total p50 {total:.1f} ms" if infer and total else ""
    return f"{snapshot.frames} frames: {v['OK']} OK, {v['NOK']} NOK, {v['ERROR']} ERROR{lat}"


def sink_lines(snapshot: PipelineSnapshot) -> list[str]:
    """One line per sink: what it delivered and what it could not, and why it matters.

    >>> sink_lines(PipelineSnapshot(sinks={"plc": {"delivered": 9, "dropped": 2, "expired": 2,
    ...     "dropped_rejects": 1, "queue_depth": 0}}))
    ['sink plc: 9 delivered, 2 not delivered (2 too old, 1 of them rejects)']
    """
    lines = []
    for name, h in snapshot.sinks.items():
        line = f"sink {name}: {h['delivered']} delivered"
        if h["dropped"]:
            why = [f"{h['expired']} too old"] if h.get("expired") else []
            if h["dropped_rejects"]:
                why.append(f"{h['dropped_rejects']} of them rejects")
            line += f", {h['dropped']} not delivered" + (f" ({', '.join(why)})" if why else "")
        lines.append(line)
    return lines


def run_warnings(snapshot: PipelineSnapshot) -> list[str]:
    """What a run's counts say that the operator must not miss.

    >>> run_warnings(PipelineSnapshot(frames=50, results=20, dropped_free_run=30,
    ...     verdicts={"OK": 0, "NOK": 0, "ERROR": 20}, deadline_misses=20))
    ... # doctest: +NORMALIZE_WHITESPACE
    ['30 of 50 frames were not inspected: in free run a newer frame replaces one still
      waiting (inspection is slower than the camera)',
     'every verdict was ERROR (20, 20 of them deadline misses: inspection is slower than
      deadline_ms; see `edge-ad bench`)']
    """
    out = []
    skipped, frames = snapshot.dropped_free_run, snapshot.frames
    if skipped:
        out.append(
            f"{skipped} of {frames} frames were not inspected: in free run a newer frame "
            "replaces one still waiting (inspection is slower than the camera)"
        )
    verdicts = snapshot.verdicts
    errors = verdicts["ERROR"]
    if errors and errors == sum(verdicts.values()):
        late = snapshot.deadline_misses
        why = (
            f", {late} of them deadline misses: inspection is slower than deadline_ms; "
            "see `edge-ad bench`"
            if late
            else ""
        )
        out.append(f"every verdict was ERROR ({errors}{why})")
    return out


def check_deadline(inspector: Inspector, deadline_ms: float) -> None:
    """Before READY: can the model meet `deadline_ms`? If not, every part would get ERROR
    (a reject), so the start fails with the numbers; close to it, a warning."""
    tiling = inspector.manifest.model.input.tiling
    if tiling is None:
        graph_ms = min(inspector.engine.warmup(runs=1) for _ in range(3))
        where = f"{inspector.engine.variant} graph on {inspector.provider}"
    elif tiling.frame is not None:
        # A tiled part costs all its tiles: time a whole part of the declared frame size.
        frame = np.zeros(tiling.frame, np.uint8)
        graph_ms = min(_part_ms(inspector, frame) for _ in range(2))
        where = f"a {tiling.frame[1]}x{tiling.frame[0]} part in tiles, {inspector.engine.variant}"
        where += f" graph on {inspector.provider}"
    else:
        log.warning(
            "tiled bundle without a declared frame size: a part's time depends on the "
            "frame, so deadline_ms %g is not checked before the first frame",
            deadline_ms,
        )
        return
    if graph_ms > deadline_ms:
        raise ConfigError(
            f"the model takes {graph_ms:.0f} ms a frame ({where}), more than deadline_ms "
            f"{deadline_ms:g}: every part would be rejected as ERROR. Raise deadline_ms to "
            f"at least {3 * graph_ms:.0f}, or run a faster variant or device (edge-ad "
            "optimize --int8; edge-ad bench shows them), or use mode: free_run"
        )
    if graph_ms > 0.5 * deadline_ms:
        log.warning(
            "the model takes %.0f ms a frame (%s), over half of deadline_ms %g: with "
            "preprocessing and a busy CPU, parts will miss it and be rejected as ERROR",
            graph_ms,
            where,
            deadline_ms,
        )


def _part_ms(inspector: Inspector, frame: np.ndarray) -> float:
    started = time.perf_counter()
    inspector.inspect(frame)
    return (time.perf_counter() - started) * 1e3


def run_line(
    config: LineConfig,
    *,
    stop: threading.Event,
    notifier: Notifier | None = None,
    duration_s: float | None = None,
    max_frames: int | None = None,
    on_started: Callable[[Pipeline], Callable[[], None]] | None = None,
) -> RunSummary:
    """Run the line until `stop` is set, the source ends, `duration_s` passes or
    `max_frames` results were given. Always drains and closes everything.

    `on_started(pipeline)` runs once frames flow and returns what to call before stopping
    (the demo uses it to make defective parts on the simulated camera)."""
    notifier = notifier or Notifier()
    log.info("line configuration:\n%s", describe(config))
    inspector = Inspector.open(config.bundle, engine=config.engine, recheck=config.recheck)
    log.info(
        "model %s: %s graph on %s",
        inspector.manifest.name,
        inspector.engine.variant,
        inspector.provider,
    )
    if config.pipeline.mode is Mode.PER_PART:
        check_deadline(inspector, config.pipeline.deadline_ms)
    source = build_source(config)
    sinks = build_sinks(config, source)
    pipeline = Pipeline(source, inspector, sinks, config.pipeline)
    health = None
    before_stop: Callable[[], None] | None = None
    started = time.monotonic()
    try:
        pipeline.start()
        prepare_sinks(sinks)
        if config.health.enabled:
            from edge_sdk.line.health import HealthServer

            health = HealthServer(pipeline, host=config.health.host, port=config.health.port)
            health.start()
        notifier.ready(f"inspecting {config.camera} with {inspector.manifest.name}")
        if on_started is not None:
            before_stop = on_started(pipeline)
        _supervise(pipeline, config, notifier, stop, started, duration_s, max_frames)
    finally:
        notifier.stopping()
        if before_stop is not None:
            before_stop()
        pipeline.close()
        if health is not None:
            health.close()
    snapshot = pipeline.snapshot()
    notifier.status("stopped: " + status_line(snapshot))
    return RunSummary(snapshot, time.monotonic() - started, pipeline.source_error)


def _supervise(
    pipeline: Pipeline,
    config: LineConfig,
    notifier: Notifier,
    stop: threading.Event,
    started: float,
    duration_s: float | None,
    max_frames: int | None,
) -> None:
    watchdog = notifier.watchdog_interval_s
    tick = min(1.0, watchdog / 3) if watchdog else 0.5
    next_summary = started + config.summary_every_s
    was_healthy: bool | None = True
    while not stop.is_set() and not pipeline.finished:
        stop.wait(tick)
        if pipeline.finished:  # a finite source ran out: an end, not a fault
            break
        now = time.monotonic()
        # Ping only while the pipeline moves: a hung camera or model must not be hidden.
        # A lost camera still pings (the process is doing its job, reconnecting; a
        # restart would not bring the camera back) but the line is told it is unhealthy.
        moving = now - pipeline.last_progress < (watchdog or config.stall_after_s)
        if watchdog and moving:
            notifier.watchdog()
        healthy, why = pipeline.health(stall_after_s=watchdog or config.stall_after_s)
        if healthy != was_healthy:
            if healthy:
                log.info("inspection healthy again: fault signals cleared")
            else:
                log.error("inspection unhealthy (%s): fault signals raised", why)
            notifier.status(status_line(pipeline.snapshot()) + ("" if healthy else f"; {why}"))
            was_healthy = healthy
        for sink in pipeline.sinks:  # the PLC heartbeat stops with us
            report = getattr(sink, "set_service_health", None)
            if report is not None:
                report(healthy, None if healthy else {"reason": why})
        if now >= next_summary:
            snapshot = pipeline.snapshot()
            notifier.status(status_line(snapshot))
            log.info("%s", status_line(snapshot))
            next_summary = now + config.summary_every_s
        if duration_s is not None and now - started >= duration_s:
            break
        if max_frames is not None and pipeline.snapshot().results >= max_frames:
            break
