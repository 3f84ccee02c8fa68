"""Resize modes of the model input: time per frame and distance from INTER_AREA.

Time: per frame size, mono8 and BGR, interleaves single calls of `to_model_input` with
``resize`` = ``area``, ``linear`` and ``area_fast`` (a `Scratch` kept between calls, as the
Inspector does), and of the candidates considered for ``area_fast`` (bare resizes; writing
the three 256x256 planes adds about 0.02 ms), so machine noise hits all alike. Prints
medians and the speed-up of each over ``area``.

Accuracy: mean and max absolute difference, in grey levels, of each method's model input
from ``area``'s, on real images (KolektorSDD and magnetic-tile test images) at their own
size and upscaled to camera sizes; random noise as the worst case (all detail above the
output's Nyquist frequency). The real images come from ../shared/data (or $EDGE_AD_DATA);
without it the accuracy on real images is skipped, with a message.

    python benchmarks/resize.py
    python benchmarks/resize.py --rounds 60 --images 24 --threads 1 --note "idle machine"

Writes the figures to benchmarks/results/resize.json (resize_threadsN.json with --threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge_sdk.runtime.preprocess import Scratch, to_model_input

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(os.environ.get("EDGE_AD_DATA", REPO.parent / "shared" / "data"))
REAL_SETS = ("kolektorsdd", "magnetic_tile")
SIZES = ((1280, 1024), (2448, 2048), (640, 480), (2449, 2051))
MODES = ("area", "linear", "area_fast")
OUT = 256


def linear_then_integer_area(image: np.ndarray) -> np.ndarray:
    """INTER_LINEAR to 256 * floor(side / 256), then INTER_AREA by those whole factors."""
    h, w = image.shape[:2]
    kx, ky = w // OUT, h // OUT
    if kx < 2 or ky < 2:
        return cv2.resize(image, (OUT, OUT), interpolation=cv2.INTER_AREA)
    grid = cv2.resize(image, (OUT * kx, OUT * ky), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(grid, (OUT, OUT), interpolation=cv2.INTER_AREA)


def pyrdown_then_area(image: np.ndarray) -> np.ndarray:
    """Gaussian pyramid (cv2.pyrDown) while both sides stay >= 512, then INTER_AREA."""
    while min(image.shape[0], image.shape[1]) >= 4 * OUT:
        image = cv2.pyrDown(image)
    return cv2.resize(image, (OUT, OUT), interpolation=cv2.INTER_AREA)


def halve_then_area(image: np.ndarray) -> np.ndarray:
    """2x2 INTER_AREA halvings (crop to even sides) while >= 256, then INTER_AREA."""
    while image.shape[0] >= 2 * OUT and image.shape[1] >= 2 * OUT:
        h, w = image.shape[0] & ~1, image.shape[1] & ~1
        image = cv2.resize(image[:h, :w], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (OUT, OUT), interpolation=cv2.INTER_AREA)


CANDIDATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear+int_area": linear_then_integer_area,
    "pyrdown+area": pyrdown_then_area,
    "halve+area": halve_then_area,
}


def model_input(image: np.ndarray, method: str) -> np.ndarray:
    """The [3,256,256] model input (grey images: one plane) that ``method`` gives."""
    out = np.empty((3, OUT, OUT), np.uint8)
    if method in MODES:
        to_model_input(image, out, resize=method)
        return out[0] if image.ndim == 2 else out
    resized = CANDIDATES[method](image)
    return resized if resized.ndim == 2 else resized[:, :, ::-1].transpose(2, 0, 1)


def time_methods(frame: np.ndarray, rounds: int) -> dict[str, float]:
    """Median ms per call of every method, calls interleaved in a shuffled order."""
    out = np.empty((3, OUT, OUT), np.uint8)
    calls: dict[str, Callable[[], object]] = {}
    for mode in MODES:
        scratch = Scratch()
        calls[mode] = lambda m=mode, s=scratch: to_model_input(frame, out, resize=m, scratch=s)
    for name, fn in CANDIDATES.items():
        calls[name] = lambda fn=fn: fn(frame)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    shuffle = random.Random(0).shuffle
    for name in order * 2:  # warm-up: scratch buffers, code paths, caches
        calls[name]()
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            start = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(s) * 1e3, 3) for name, s in samples.items()}


def real_images(count: int) -> tuple[list[np.ndarray], list[str]]:
    """Up to ``count`` test images of each real set, spread evenly over the sorted files."""
    images: list[np.ndarray] = []
    used: list[str] = []
    for name in REAL_SETS:
        files = sorted((DATA / name / "test").glob("*/*.jpg"))
        step = max(1, len(files) // count)
        for path in files[::step][:count]:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is not None:
                images.append(image)
                used.append(str(path.relative_to(DATA)))
    return images, used


def differences(images: list[np.ndarray], methods: list[str]) -> dict[str, dict[str, float]]:
    """Per method: mean (over images) of the mean absolute difference from area, and max."""
    means: dict[str, list[float]] = {m: [] for m in methods}
    peaks: dict[str, int] = {m: 0 for m in methods}
    for image in images:
        reference = model_input(image, "area").astype(np.int16)
        for m in methods:
            diff = np.abs(model_input(image, m).astype(np.int16) - reference)
            means[m].append(float(diff.mean()))
            peaks[m] = max(peaks[m], int(diff.max()))
    return {
        m: {"mean_abs": round(statistics.fmean(means[m]), 3), "max_abs": peaks[m]} for m in methods
    }


def accuracy(count: int) -> tuple[list[dict[str, object]], list[str]]:
    methods = ["linear", "area_fast", *CANDIDATES]
    rows: list[dict[str, object]] = []
    images: list[np.ndarray] = []
    used: list[str] = []
    if all((DATA / name / "test").is_dir() for name in REAL_SETS):
        images, used = real_images(count)
    else:
        print(f"real images: {DATA}/{{{','.join(REAL_SETS)}}}/test not found (set EDGE_AD_DATA);")
        print("  skipping the accuracy on real images, keeping the noise worst case")
    if images:
        rows.append({"images": "real, own size", "n": len(images), **differences(images, methods)})
        for w, h in ((1280, 1024), (2448, 2048), (2449, 2051)):
            up = [cv2.resize(i, (w, h), interpolation=cv2.INTER_CUBIC) for i in images]
            label = f"real, upscaled to {w}x{h}"
            rows.append({"images": label, "n": len(up), **differences(up, methods)})
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (2048, 2448), dtype=np.uint8) for _ in range(4)]
    rows.append({"images": "noise 2448x2048", "n": len(noise), **differences(noise, methods)})
    return rows, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed calls per method")
    parser.add_argument("--images", type=int, default=24, help="real images per data set")
    parser.add_argument("--threads", type=int, help="cv2.setNumThreads (default: OpenCV's)")
    parser.add_argument("--note", default="", help="conditions to record (machine load)")
    args = parser.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)

    rng = np.random.default_rng(1)
    timing: list[dict[str, object]] = []
    for w, h in SIZES:
        for fmt, shape in (("mono8", (h, w)), ("bgr8", (h, w, 3))):
            frame = rng.integers(0, 256, shape, dtype=np.uint8)
            medians = time_methods(frame, args.rounds)
            timing.append({"frame": f"{w}x{h}", "format": fmt, "median_ms": medians})
    rows, used = accuracy(args.images)

    names = [*MODES, *CANDIDATES]
    print(f"median ms per frame to the 256x256 input, {args.rounds} interleaved rounds")
    print(f"  {'frame':10s} {'format':6s} " + " ".join(f"{n:>15s}" for n in names))
    for t in timing:
        med = t["median_ms"]
        assert isinstance(med, dict)
        print(
            f"  {t['frame']:10s} {t['format']:6s} "
            + " ".join(f"{med[n]:8.3f} {med['area'] / med[n]:5.1f}x" for n in names)
        )
    print("difference from area in grey levels: mean |d| / max |d|")
    methods = ["linear", "area_fast", *CANDIDATES]
    print(f"  {'images':30s} {'n':>3s} " + " ".join(f"{m:>15s}" for m in methods))
    for row in rows:
        cells = []
        for m in methods:
            d = row[m]
            assert isinstance(d, dict)
            cells.append(f"{d['mean_abs']:9.3f} / {d['max_abs']:3d}")
        print(f"  {row['images']:30s} {row['n']:3d} " + " ".join(cells))

    report = {
        "what": "to_model_input resize modes vs INTER_AREA (benchmarks/resize.py)",
        "output": f"{OUT}x{OUT}",
        "rounds": args.rounds,
        "note": args.note,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "timing": timing,
        "accuracy_vs_area": rows,
        "real_images": used,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "resize.json" if args.threads is None else f"resize_threads{args.threads}.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
