"""The pipeline's contract: exactly one result per acquired frame, in every fault."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk import Inspector, Verdict
from edge_sdk.line.pipeline import Mode, Pipeline, PipelineOptions
from edge_sdk.records import Inspection
from edge_sdk.sources.files import FolderSource

pytest.importorskip("onnx")
from tiny_graphs import brightness_graph, failing_graph, write_tiny_bundle


class Collect:
    """A sink that keeps everything (submit never blocks: it only appends)."""

    name = "collect"

    def __init__(self) -> None:
        self.items: list[Inspection] = []
        self.lock = threading.Lock()
        self.closed = False

    def submit(self, inspection: Inspection) -> None:
        with self.lock:
            self.items.append(inspection)

    def close(self, *, timeout_s: float) -> None:
        self.closed = True


class Exploding:
    name = "exploding"

    def submit(self, inspection: Inspection) -> None:
        raise RuntimeError("broken sink")

    def close(self, *, timeout_s: float) -> None:
        pass


def parts(folder: Path, n: int, *, bright_every: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = np.full((120, 160), 128, np.uint8)
        if i % bright_every == 0:
            image[30:70, 40:100] = 255  # NOK with the brightness bundle
        cv2.imwrite(str(folder / f"part{i:03d}.png"), image)
    return folder


@pytest.fixture()
def tiny(tmp_path: Path) -> Inspector:
    return Inspector.open(
        write_tiny_bundle(tmp_path / "tiny.bundle", brightness_graph()), device="cpu"
    )


def run_to_end(pipeline: Pipeline, *, timeout_s: float = 60) -> None:
    with pipeline:
        assert pipeline.wait(timeout_s=timeout_s), "pipeline did not finish"


def test_every_frame_gets_one_result_in_order(tiny: Inspector, tmp_path: Path) -> None:
    sink = Collect()
    pipeline = Pipeline(FolderSource(parts(tmp_path / "in", 12)), tiny, [sink, Exploding()])
    run_to_end(pipeline)
    ids = [i.result.frame_id for i in sink.items]
    assert ids == list(range(12))
    verdicts = [i.result.verdict for i in sink.items]
    assert verdicts == [Verdict.NOK if i % 3 == 0 else Verdict.OK for i in range(12)]
    snap = pipeline.snapshot()
    assert snap.frames == snap.results == 12 and snap.in_flight == 0
    assert snap.verdicts == {"OK": 8, "NOK": 4, "ERROR": 0}
    assert snap.latency_ms["infer"]["p50"] > 0 and sink.closed
    assert all(i.acquired_ns > 0 and i.frame.part_id for i in sink.items)


def test_results_stay_unique_across_restarts(tiny: Inspector, tmp_path: Path) -> None:
    from edge_sdk.sinks import SinkRunner
    from edge_sdk.sinks.jsonl import JsonlSink

    out, folder = tmp_path / "results.jsonl", parts(tmp_path / "in", 4)
    run_ids = []
    for _ in range(2):  # the service restarted: frame ids start again
        pipeline = Pipeline(FolderSource(folder), tiny, [SinkRunner(JsonlSink(out))])
        run_to_end(pipeline)
        run_ids.append(pipeline.snapshot().run_id)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame_id"] for r in records] == [0, 1, 2, 3] * 2
    keys = [(r["run_id"], r["camera"], r["frame_id"]) for r in records]
    assert len(set(keys)) == 8 and run_ids[0] != run_ids[1]
    assert [r["run_id"] for r in records] == [run_ids[0]] * 4 + [run_ids[1]] * 4


def test_missed_deadline_is_an_error(tiny: Inspector, tmp_path: Path) -> None:
    sink = Collect()
    options = PipelineOptions(deadline_ms=1e-6)
    run_to_end(Pipeline(FolderSource(parts(tmp_path / "in", 5)), tiny, [sink], options))
    assert [i.result.frame_id for i in sink.items] == list(range(5))
    assert all(i.result.verdict is Verdict.ERROR for i in sink.items)
    assert all("deadline missed" in (i.result.error or "") for i in sink.items)


def test_graph_failing_at_run_time(tmp_path: Path) -> None:
    inspector = Inspector.open(
        write_tiny_bundle(tmp_path / "f.bundle", failing_graph()), device="cpu", warmup=False
    )
    sink = Collect()
    run_to_end(Pipeline(FolderSource(parts(tmp_path / "in", 4)), inspector, [sink]))
    assert [i.result.verdict for i in sink.items] == [Verdict.ERROR] * 4


def test_queue_overflow_fails_safe(s_bundle: Path, tmp_path: Path) -> None:
    """A slow model (random EfficientAD-S, hundreds of ms) behind a fast source."""
    inspector = Inspector.open(s_bundle, device="cpu")
    sink = Collect()
    options = PipelineOptions(queue_size=1, deadline_ms=60_000)
    pipeline = Pipeline(FolderSource(parts(tmp_path / "in", 6)), inspector, [sink], options)
    run_to_end(pipeline)
    ids = sorted(i.result.frame_id for i in sink.items)
    assert ids == list(range(6))  # every frame once, whatever happened to it
    full = [i for i in sink.items if "queue full" in (i.result.error or "")]
    assert full and all(i.result.verdict is Verdict.ERROR for i in full)
    assert pipeline.snapshot().queue_overflows == len(full)


def test_free_run_newest_wins(s_bundle: Path, tmp_path: Path) -> None:
    inspector = Inspector.open(s_bundle, device="cpu")
    sink = Collect()
    options = PipelineOptions(mode=Mode.FREE_RUN, deadline_ms=60_000)
    pipeline = Pipeline(FolderSource(parts(tmp_path / "in", 8)), inspector, [sink], options)
    run_to_end(pipeline)
    snap = pipeline.snapshot()
    assert snap.dropped_free_run > 0
    assert snap.results + snap.dropped_free_run == snap.frames == 8
    assert sink.items[-1].result.frame_id == 7  # the newest frame is never the one dropped


def test_stop_mid_burst_fails_safe_and_never_hangs(s_bundle: Path, tmp_path: Path) -> None:
    inspector = Inspector.open(s_bundle, device="cpu")
    sink = Collect()
    options = PipelineOptions(deadline_ms=60_000, drain_timeout_s=0.3, queue_size=100)
    source = FolderSource(parts(tmp_path / "in", 10), loop=True, rate_hz=200)
    pipeline = Pipeline(source, inspector, [sink], options)
    pipeline.start()
    time.sleep(1.0)
    started = time.monotonic()
    pipeline.close()
    assert time.monotonic() - started < 10
    snap = pipeline.snapshot()
    assert snap.frames == snap.results == len(sink.items) > 0
    ids = [i.result.frame_id for i in sink.items]
    assert sorted(ids) == list(range(len(ids)))
    assert snap.shutdown_failsafe > 0  # queued frames that could not be finished
    failsafe = [i for i in sink.items if "shutting down" in (i.result.error or "")]
    assert all(i.result.verdict is Verdict.ERROR for i in failsafe)


def test_stop_fails_queued_frames_safe_when_inspection_outlives_it(
    tiny: Inspector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A CPU starved by other work: one inspection takes longer than the whole stop may.
    # close() must still hand every queued frame a verdict before the sinks close.
    class Starved:
        def __init__(self, inner: Inspector) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        def inspect_frame(self, frame: object) -> object:
            time.sleep(3.0)
            return self.inner.inspect_frame(frame)  # type: ignore[arg-type]

    sink = Collect()
    options = PipelineOptions(
        deadline_ms=60_000, drain_timeout_s=0.0, read_timeout_s=0.1, queue_size=50
    )
    source = FolderSource(parts(tmp_path / "in", 10), loop=True, rate_hz=100)
    pipeline = Pipeline(source, Starved(tiny), [sink], options)  # type: ignore[arg-type]
    pipeline.start()
    time.sleep(0.5)
    pipeline.close()  # the stop's limit here is 2.1 s: inside the first inspection
    snap = pipeline.snapshot()
    assert snap.frames > 5 and snap.shutdown_failsafe == snap.frames
    # Every frame has its verdict when close() returns, the one being inspected included.
    ids = sorted(i.result.frame_id for i in sink.items)
    assert ids == list(range(snap.frames))
    assert all(i.result.verdict is Verdict.ERROR for i in sink.items)
    assert "and the one being inspected" in caplog.text
    first = next(i for i in sink.items if i.result.frame_id == 0)
    assert "inspection ran past the stop's time limit" in (first.result.error or "")
    # The abandoned inspection finishes later: its verdict must not make a second one.
    deadline = time.monotonic() + 10
    while "came after the stop had failed it safe" not in caplog.text:
        assert time.monotonic() < deadline, "the late verdict was never seen"
        time.sleep(0.1)
    assert len(sink.items) == snap.frames


def test_sinks_drain_at_once_at_stop_and_count_what_is_left(
    tiny: Inspector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_sdk.sinks import SinkRunner

    class Slow:
        def __init__(self, name: str) -> None:
            self.name, self.seen = name, 0

        def __call__(self, inspection: Inspection) -> None:
            time.sleep(0.25)
            self.seen += 1

        def close(self) -> None:
            pass

    slow = [Slow("plc"), Slow("mes")]
    runners = [SinkRunner(s) for s in slow]  # type: ignore[arg-type]
    options = PipelineOptions(sink_close_timeout_s=2.0)
    pipeline = Pipeline(FolderSource(parts(tmp_path / "in", 20)), tiny, runners, options)
    pipeline.start()
    assert pipeline.wait(timeout_s=30)
    t0 = time.monotonic()
    pipeline.close()
    took = time.monotonic() - t0
    # Both drained for 0.75 x 2 s side by side; one after the other took twice as long.
    assert took < 3.0, took
    assert "stopping: results still queued for plc (" in caplog.text  # said while it waits
    for runner, sink in zip(runners, slow, strict=True):
        h = runner.health()
        assert h.delivered == sink.seen >= 5 and h.delivered + h.dropped == 20, h
