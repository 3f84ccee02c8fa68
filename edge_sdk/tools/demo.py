"""`edge-ad run --demo`: the whole line on built-in defaults, on any machine.

The camera is the GenICam simulator that ships in the `genicam` wheel (viky.cti): a white
field with a bouncing black square. The demo bundle is EfficientAD-S trained on frames
captured from that camera (a seeded random teacher, 60 steps, the threshold set on fresh
good frames and made-up defects; built once, then cached). While the line runs, the demo
makes every few seconds a "defective part" by growing the square (the camera's
BouncingBallSize feature) for a second: those frames should be rejected, the rest passed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROFILE = "viky-mono8.yaml"
GOOD_BALL = 20  # the profile's BouncingBallSize
DEFECT_BALL = 40  # the simulator's largest
# Sized for a first verdict within two minutes of `scripts/demo` on a fresh clone of a
# 2-core CPU. Measured on 60 fresh good frames and 15 made-up defects: 30 steps on 40
# frames score every defect 2.4x above the highest good frame (40 steps on 60: 2.8x,
# 200 on 120: 7x) and build in 50 s; the threshold comes from seen defects (below).
DEMO_STEPS = 30
DEMO_FRAMES = 40
CALIBRATION_GOOD, CALIBRATION_DEFECTS = 20, 5


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-ad"


def profile_path() -> Path:
    """The simulator's profile: in the checkout's calibration/ folder, beside the package."""
    package = Path(__file__).resolve().parents[1]
    candidate = package.parent / "calibration" / PROFILE
    if candidate.exists():
        return candidate
    raise FileNotFoundError(f"camera profile {PROFILE} not found in {candidate.parent}")


def simulator() -> Any:
    """The simulated camera with the demo's profile (not opened yet)."""
    from edge_sdk.sources.genicam import GenICamSource
    from edge_sdk.sources.profiles import load_profile

    return GenICamSource(0, profile=load_profile(profile_path()), camera_id="sim")


def capture_frames(count: int, *, ball: int) -> list[Any]:
    """`count` consecutive frames of the simulator with its square at size `ball`."""
    source = simulator()
    with source:
        source.node_map.BouncingBallSize.value = ball
        try:
            source.read(timeout_s=5.0)  # a frame that may predate the new size
            return [source.read(timeout_s=5.0).image for _ in range(count)]
        finally:
            source.node_map.BouncingBallSize.value = GOOD_BALL


def capture_good_frames(folder: Path, *, count: int = DEMO_FRAMES, every: int = 2) -> int:
    """Save `count` frames of the simulator (every `every`-th, for varied positions)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    with simulator() as source:
        saved = 0
        while saved < count:
            frame = source.read(timeout_s=5.0)
            if frame.frame_id % every == 0:
                cv2.imwrite(str(folder / f"good-{saved:03d}.png"), frame.image)
                saved += 1
    return saved


def demo_bundle_path(steps: int = DEMO_STEPS) -> Path:
    return cache_dir() / f"demo-viky-s-{steps}.bundle"


def demo_bundle(*, steps: int = DEMO_STEPS, rebuild: bool = False, progress: Any = None) -> Path:
    """The cached demo bundle, built first if needed (needs the train extra)."""
    out = demo_bundle_path(steps)
    if out.exists() and not rebuild:
        return out
    from edge_sdk.calibration.recalibrate import recalibrate
    from edge_sdk.training.train import TrainConfig, cpu_has_fast_bf16, train

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-ad-demo-") as tmp:
        folder = Path(tmp) / "good"
        log.info("capturing %d good frames from the simulated camera", DEMO_FRAMES)
        capture_good_frames(folder)
        trained = Path(tmp) / "trained.bundle"
        config = TrainConfig(
            data=folder,
            out=trained,
            architecture="efficientad-s",
            teacher="random",
            steps=steps,
            seed=0,
            bf16=cpu_has_fast_bf16(),
            name="demo-viky",
            description="Demo: EfficientAD-S on frames of the simulated GenICam camera "
            "(random teacher); for trying the line, not for production.",
            dataset_label=f"{DEMO_FRAMES} frames of the viky.cti simulator",
            checkpoint_dir=Path(tmp) / "checkpoint",
        )
        train(config, progress=progress)
        # The demo knows its defects: a threshold halfway between fresh good frames and
        # made-up defective ones passes every good part, where a threshold from a few
        # held-out good frames alone rejected one in five.
        log.info("calibrating on fresh good frames and made-up defects")
        if out.exists():
            out.unlink()
        return recalibrate(
            trained,
            capture_frames(CALIBRATION_GOOD, ball=GOOD_BALL),
            bad_images=capture_frames(CALIBRATION_DEFECTS, ball=DEFECT_BALL),
            out=out,
            policy="margin",
            name="demo-viky",
            description="Demo: EfficientAD-S on frames of the simulated GenICam camera "
            "(random teacher); for trying the line, not for production.",
            good_source=f"{CALIBRATION_GOOD} fresh frames of the viky.cti simulator",
            bad_source=f"{CALIBRATION_DEFECTS} frames with the square grown to {DEFECT_BALL} px",
        )


class DefectInjector:
    """Grows the simulator's square for `hold_s` every `every_s`: a 'defective part'."""

    # Held a second: in free run a part shorter than one inspection could go unseen.
    def __init__(self, source: Any, *, every_s: float = 3.0, hold_s: float = 1.0) -> None:
        self.source = source
        self.every_s = every_s
        self.hold_s = hold_s
        self.injected = 0
        self.windows: list[tuple[float, float]] = []  # wall-clock (start, end) of each defect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edge-ad-demo", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _set(self, size: int) -> None:
        try:
            node = self.source.node_map.BouncingBallSize
            node.value = min(size, node.max)
        except Exception as exc:  # the camera may be reconnecting: skip this round
            log.debug("demo: cannot set BouncingBallSize: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            start = time.time()
            self._set(DEFECT_BALL)
            self.injected += 1
            self._stop.wait(self.hold_s)
            self._set(GOOD_BALL)
            self.windows.append((start, time.time()))


@dataclass(frozen=True)
class DemoScore:
    parts: int
    defects_made: int
    caught: int
    false_rejects: int
    not_inspected: int = 0  # defects with no frame inspected in their window (free run)

    def summary(self) -> str:
        missed = self.defects_made - self.caught - self.not_inspected
        verdict = "every defect caught" if not missed else f"{missed} defects MISSED"
        if self.not_inspected:
            verdict += f" ({self.not_inspected} never inspected: inspection was too slow)"
        verdict += (
            ", no good part rejected"
            if not self.false_rejects
            else (f", {self.false_rejects} good parts REJECTED (false rejects)")
        )
        return (
            f"{self.parts} parts inspected, {self.defects_made} defects made, {self.caught} "
            f"caught, {self.false_rejects} false rejects: {verdict}"
        )


def score_run(
    records: list[dict[str, Any]],
    windows: list[tuple[float, float]],
    *,
    settle_s: float = 0.3,
) -> DemoScore:
    """Which defects the demo's results caught, and which good parts they rejected.

    A defect is caught when a reject was acquired inside its window; a reject outside
    every window (widened by `settle_s`, the camera's frames in flight when the square
    changes) is a false reject.

    >>> recs = [{"timestamp": "1970-01-01T00:00:10.000000Z", "verdict": "NOK"},
    ...         {"timestamp": "1970-01-01T00:00:20.000000Z", "verdict": "OK"},
    ...         {"timestamp": "1970-01-01T00:00:30.000000Z", "verdict": "NOK"}]
    >>> score = score_run(recs, [(9.9, 10.3), (19.9, 20.3)])
    >>> score.caught, score.false_rejects
    (1, 1)
    >>> score.summary().split(": ")[1]
    '1 defects MISSED, 1 good parts REJECTED (false rejects)'
    """
    rejects = [_epoch_s(r["timestamp"]) for r in records if r.get("verdict") in ("NOK", "ERROR")]
    times = [_epoch_s(r["timestamp"]) for r in records]
    caught = sum(any(a <= t <= b + settle_s for t in rejects) for a, b in windows)
    unseen = sum(not any(a <= t <= b + settle_s for t in times) for a, b in windows)
    false = sum(not any(a - settle_s <= t <= b + settle_s for a, b in windows) for t in rejects)
    return DemoScore(len(records), len(windows), caught, false, unseen)


def _epoch_s(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def fresh_output(out_dir: Path) -> Path | None:
    """Move the last demo's output aside (to `<out_dir>.previous`), so a run's results and
    overlays are its own. Returns where the old ones went, or None."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return None
    previous = out_dir.with_name(out_dir.name + ".previous")
    if previous.exists():
        shutil.rmtree(previous)
    out_dir.rename(previous)
    return previous


def demo_overrides(out_dir: Path, bundle: Path) -> dict[str, Any]:
    """The line config of the demo: simulator, demo bundle, results and an archive."""
    return {
        "source": "genicam",
        "camera": "0",
        "profile": str(profile_path()),
        "bundle": str(bundle),
        "engine": {"device": "auto"},
        "pipeline": {"mode": "free_run", "deadline_ms": 5000},
        "health": {"enabled": True, "port": 0},
        "sinks": [
            {"type": "jsonl", "path": str(out_dir / "results.jsonl")},
            {
                "type": "archive",
                "root": str(out_dir / "archive"),
                "ok_every": 10,
                "min_free_bytes": 100 * 2**20,
            },
        ],
    }


def wait_for_camera(source: Any, *, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            source.node_map  # noqa: B018 (raises until connected)
            return
        except Exception:
            time.sleep(0.05)
