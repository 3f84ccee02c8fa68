"""The Python API: load a bundle, inspect images, get verdicts and maps.

>>> from edge_sdk import Inspector                              # doctest: +SKIP
>>> with Inspector.open("screw.bundle", device="cpu") as inspector:  # doctest: +SKIP
...     result = inspector.inspect(cv2.imread("part.png"))
...     print(result.verdict, result.score)

A failure inside inspection never raises: the frame gets verdict ERROR with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from edge_sdk.errors import ConfigError
from edge_sdk.records import Frame, Latency, Result, Verdict
from edge_sdk.runtime.bundle import Bundle
from edge_sdk.runtime.engine import Device, Engine, EngineOptions
from edge_sdk.runtime.manifest import Manifest
from edge_sdk.runtime.preprocess import ImageError, Scratch, check_image, to_model_input
from edge_sdk.runtime.scoring import MapScorer, upsample
from edge_sdk.runtime.tiled import TiledFrames

log = logging.getLogger(__name__)

# A faster variant decides a part only when its score is clear of the threshold by this many
# times the largest score difference its parity gate measured; nearer, the float32 graph
# re-decides, so the variant never flips a verdict the float32 graph would give. The gate
# sees good parts only, and defects move further: on magnetic-tile test images the int8
# score differed from float32 by up to 2.4 times the gate's largest difference.
RECHECK_FACTOR = 3.0


def recheck_margin(manifest: Manifest, variant: str) -> float | None:
    """The score distance from the threshold within which `variant`'s verdicts are
    re-decided by float32; None for float32 itself or without a parity record."""
    ref = manifest.model.variants.get(variant)
    if variant == "fp32" or ref is None:
        return None
    diff = (ref.parity or {}).get("max_score_difference")
    if not isinstance(diff, (int, float)):
        log.warning("variant %s has no parity score difference: no float32 recheck", variant)
        return None
    return RECHECK_FACTOR * float(diff)


class Inspector:
    """Preprocess -> graph -> normalise -> decide, for one bundle on one engine.

    Not thread-safe: it reuses its input buffers, so give each inspection thread its own.
    """

    def __init__(
        self,
        manifest: Manifest,
        engine: Engine,
        *,
        max_batch: int = 8,
        recheck: Engine | None = None,
        recheck_margin: float = 0.0,
    ) -> None:
        self.manifest = manifest
        self.engine = engine
        # The float32 engine that re-decides parts the faster variant scored near the
        # threshold (see RECHECK_FACTOR); None: the engine's verdicts stand.
        self.recheck = recheck
        self.recheck_margin = recheck_margin
        self.scorer = MapScorer(manifest.normalization)
        self.image_threshold = manifest.threshold.image
        self.pixel_threshold = manifest.threshold.pixel
        spec = manifest.model.input
        self._resize = spec.resize
        # Preallocated input and resize scratch: the hot path allocates only its results.
        self._batch = np.zeros((max_batch, 3, spec.height, spec.width), dtype=np.uint8)
        self._scratch = Scratch()
        # A tiled bundle: each frame's regions cut into tiles (runtime/tiling.py).
        self._tiled = (
            TiledFrames(spec.tiling, self.scorer, resize=spec.resize, max_batch=max_batch)
            if spec.tiling is not None
            else None
        )

    @classmethod
    def open(
        cls,
        bundle: str | os.PathLike[str] | Bundle,
        *,
        device: Device | None = None,
        variant: str | None = None,
        threads: int | None = None,
        engine: EngineOptions | None = None,
        max_batch: int = 8,
        warmup: bool = True,
        recheck: bool = True,
    ) -> Inspector:
        """Open a bundle and build its engine (warmed up unless `warmup=False`).

        `device` (default "auto"), `variant` and `threads` are the common engine settings;
        for the others (TensorRT cache, CUDA graphs, ...) pass `engine=EngineOptions(...)`
        instead, with those three inside it.

        With a faster variant (int8, fp16) and `recheck`, parts it scores near the
        threshold are re-decided by the float32 graph on the same device (see
        :data:`RECHECK_FACTOR`), so its verdicts are those of float32."""
        if engine is not None and (device, variant, threads) != (None, None, None):
            raise ConfigError(
                "Inspector.open: give device, variant and threads either directly or inside "
                "engine=EngineOptions(...), not both"
            )
        options = engine or EngineOptions(
            device=device or "auto", variant=variant, threads=threads or 0
        )
        opened = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        main = Engine.from_bundle(opened, options, warmup=warmup)
        margin = recheck_margin(opened.manifest, main.variant) if recheck else None
        exact = None
        if margin is not None:
            exact = Engine.from_bundle(opened, replace(options, variant="fp32"), warmup=warmup)
            log.info(
                "%s verdicts within %.4g of the threshold are re-decided by float32",
                main.variant,
                margin,
            )
        return cls(
            opened.manifest,
            main,
            max_batch=max_batch,
            recheck=exact,
            recheck_margin=margin or 0.0,
        )

    @property
    def provider(self) -> str:
        return self.engine.provider

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # ONNX Runtime frees the session with its last reference.
        self.engine = None  # type: ignore[assignment]
        self.recheck = None

    def inspect(
        self, image: np.ndarray, *, frame_id: int = 0, part_id: str | None = None
    ) -> Result:
        """Inspect one image (uint8, grey or BGR, any size)."""
        return self.inspect_batch([image], frame_ids=[frame_id], part_ids=[part_id])[0]

    def inspect_frame(self, frame: Frame) -> Result:
        return self.inspect(frame.image, frame_id=frame.frame_id, part_id=frame.part_id)

    def inspect_batch(
        self,
        images: Sequence[np.ndarray],
        *,
        frame_ids: Sequence[int] | None = None,
        part_ids: Sequence[str | None] | None = None,
    ) -> list[Result]:
        """Inspect several images in one graph run; one Result per image, in order."""
        n = len(images)
        ids = list(frame_ids) if frame_ids is not None else list(range(n))
        parts: list[str | None] = list(part_ids) if part_ids is not None else [None] * n
        if self._tiled is not None:  # a part's tiles fill the batches
            each = zip(images, ids, parts, strict=True)
            return [self._inspect_tiled(image, i, part) for image, i, part in each]
        results: list[Result | None] = [None] * n
        for start in range(0, n, self._batch.shape[0]):
            stop = min(n, start + self._batch.shape[0])
            self._run_chunk(images, ids, parts, start, stop, results)
        return [r for r in results if r is not None]

    def _run_chunk(
        self,
        images: Sequence[np.ndarray],
        ids: list[int],
        parts: list[str | None],
        start: int,
        stop: int,
        results: list[Result | None],
    ) -> None:
        t0 = time.perf_counter()
        ok: list[int] = []  # indices (into images) that preprocessed, in batch order
        for i in range(start, stop):
            try:
                to_model_input(
                    images[i], self._batch[len(ok)], resize=self._resize, scratch=self._scratch
                )
                ok.append(i)
            except Exception as exc:  # a bad image fails alone, never the batch
                results[i] = self._error(ids[i], parts[i], images[i], f"preprocess: {exc}")
        if not ok:
            return
        t1 = time.perf_counter()
        try:
            map_st, map_ae = self.engine.run(self._batch[: len(ok)])
        except Exception as exc:
            log.error("inference failed for frames %s: %s", [ids[i] for i in ok], exc)
            for i in ok:
                results[i] = self._error(ids[i], parts[i], images[i], f"inference: {exc}")
            return
        t2 = time.perf_counter()
        maps: dict[int, tuple[int, np.ndarray, str]] = {}  # batch row -> image, map, graph
        for k, i in enumerate(ok):
            try:
                maps[k] = (i, self.scorer.combine(map_st[k, 0], map_ae[k, 0]), self.engine.variant)
            except Exception as exc:
                results[i] = self._error(ids[i], parts[i], images[i], f"decide: {exc}")
        recheck_s = self._recheck_near_threshold(maps, ids, parts, images, results)
        t3 = time.perf_counter()
        share = 1e3 / len(ok)
        latency = Latency(
            preprocess_ms=(t1 - t0) * share,
            infer_ms=(t2 - t1 + recheck_s) * share,
            decide_ms=(t3 - t2 - recheck_s) * share,
        )
        for i, combined, graph in maps.values():
            results[i] = self._decide(ids[i], parts[i], images[i], combined, latency, graph)

    def _inspect_tiled(self, image: np.ndarray, frame_id: int, part_id: str | None) -> Result:
        """One part through a tiled bundle: all its tiles, one verdict, the worst tile."""
        assert self._tiled is not None
        tiled = self._tiled
        t0 = time.perf_counter()
        try:
            plans, tiles = tiled.cut(image)
        except Exception as exc:  # a bad or too small frame fails alone
            return self._error(frame_id, part_id, image, f"preprocess: {exc}")
        t1 = time.perf_counter()
        graph = self.engine.variant
        try:
            maps = tiled.run(tiles, self.engine.run)
        except Exception as exc:
            log.error("inference failed for frame %s: %s", frame_id, exc)
            return self._error(frame_id, part_id, image, f"inference: {exc}")
        t2 = time.perf_counter()
        recheck_s = 0.0
        try:
            frame_map, score, worst = tiled.assemble(image.shape, plans, maps)
            if self.recheck is not None and not abs(score - self.image_threshold) > (
                self.recheck_margin
            ):
                started = time.perf_counter()
                maps = tiled.run(tiles, self.recheck.run)
                recheck_s = time.perf_counter() - started
                frame_map, score, worst = tiled.assemble(image.shape, plans, maps)
                graph = "fp32"
        except Exception as exc:  # fail-safe: no verdict without every tile's map
            return self._error(frame_id, part_id, image, f"decide: {exc}")
        t3 = time.perf_counter()
        latency = Latency(
            preprocess_ms=(t1 - t0) * 1e3,
            infer_ms=(t2 - t1 + recheck_s) * 1e3,
            decide_ms=(t3 - t2 - recheck_s) * 1e3,
        )
        result = self._decide(frame_id, part_id, image, frame_map, latency, graph)
        return replace(result, worst_tile=worst)

    def _recheck_near_threshold(
        self,
        maps: dict[int, tuple[int, np.ndarray, str]],
        ids: list[int],
        parts: list[str | None],
        images: Sequence[np.ndarray],
        results: list[Result | None],
    ) -> float:
        """Re-decide with float32 the rows whose score is within the margin of the
        threshold (in place in `maps`); returns the seconds it took."""
        if self.recheck is None:
            return 0.0
        rows = [
            k
            for k, (_, combined, _) in maps.items()
            if not abs(MapScorer.score(combined) - self.image_threshold) > self.recheck_margin
        ]  # a NaN score is "near": float32 decides it
        if not rows:
            return 0.0
        start = time.perf_counter()
        try:
            st, ae = self.recheck.run(np.ascontiguousarray(self._batch[rows]))
            for j, k in enumerate(rows):
                maps[k] = (maps[k][0], self.scorer.combine(st[j, 0], ae[j, 0]), "fp32")
        except Exception as exc:  # fail-safe: no verdict from the variant alone
            log.error("float32 recheck failed: %s", exc)
            for k in rows:
                i = maps.pop(k)[0]
                results[i] = self._error(ids[i], parts[i], images[i], f"recheck: {exc}")
        return time.perf_counter() - start

    def _decide(
        self,
        frame_id: int,
        part_id: str | None,
        image: np.ndarray,
        combined: np.ndarray,
        latency: Latency,
        graph: str = "",
    ) -> Result:
        score = MapScorer.score(combined)
        if not np.isfinite(score):
            return Result(
                frame_id=frame_id,
                part_id=part_id,
                verdict=Verdict.ERROR,
                score=float("nan"),
                threshold=self.image_threshold,
                anomaly_map=combined,
                image_shape=image.shape,
                latency=latency,
                error="the model produced a non-finite anomaly map",
                graph=graph,
            )
        verdict = Verdict.NOK if score > self.image_threshold else Verdict.OK
        return Result(
            frame_id=frame_id,
            part_id=part_id,
            verdict=verdict,
            score=score,
            threshold=self.image_threshold,
            anomaly_map=combined,
            image_shape=image.shape,
            latency=latency,
            graph=graph,
        )

    def _error(self, frame_id: int, part_id: str | None, image: Any, message: str) -> Result:
        shape = image.shape if isinstance(image, np.ndarray) else ()
        return Result(
            frame_id=frame_id,
            part_id=part_id,
            verdict=Verdict.ERROR,
            score=float("nan"),
            threshold=self.image_threshold,
            image_shape=shape,
            error=message,
        )

    def full_map(self, result: Result) -> np.ndarray:
        """The anomaly map at the inspected image's own size (float32, HxW).

        An ERROR without a map has no value anywhere: NaN at the image's size, or a
        0x0 map when there was no image."""
        if result.anomaly_map is None or len(result.image_shape) < 2:
            h, w = result.image_shape[:2] if len(result.image_shape) >= 2 else (0, 0)
            return np.full((h, w), np.nan, np.float32)
        return upsample(result.anomaly_map, result.image_shape[0], result.image_shape[1])

    def defect_mask(self, result: Result) -> np.ndarray:
        """Pixels above the bundle's pixel threshold, at the image's size (bool, HxW).

        Fail safe for an ERROR without a map: every pixel is marked (nothing of the
        part can be vouched for), or a 0x0 mask when there was no image."""
        full = self.full_map(result)
        if result.anomaly_map is None:
            return np.ones(full.shape, bool)
        # NaN compares False; a non-finite map is already an ERROR verdict.
        return np.asarray(full > self.pixel_threshold)

    def overlay(self, image: np.ndarray | None, result: Result) -> np.ndarray:
        """The operator's picture: heatmap anchored to the threshold, contours, verdict.
        For an ERROR it is the image (or, if there was none, a grey card) with the
        reason in a magenta banner."""
        from edge_sdk.runtime.overlay import render_error_overlay, render_overlay

        if result.anomaly_map is None:
            picture = np.full((240, 320), 96, np.uint8)  # no usable picture: the reason shows
            if isinstance(image, np.ndarray):
                with contextlib.suppress(ImageError):
                    check_image(image)
                    picture = image
            return render_error_overlay(picture, result.error or "no anomaly map")
        if image is None:
            raise ImageError(f"frame {result.frame_id}: overlay needs the inspected image")
        check_image(image)
        return render_overlay(
            image,
            self.full_map(result),
            pixel_threshold=self.pixel_threshold,
            verdict=result.verdict,
            score=result.score,
            image_threshold=self.image_threshold,
        )
