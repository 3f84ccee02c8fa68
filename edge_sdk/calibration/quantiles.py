"""Map quantiles and the image threshold, measured on good images through the graph itself.

This needs only the runtime (ONNX Runtime), so a line can be recalibrated on the edge box.
Quantiles are computed exactly over every map value (no sampling, no size cap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_sdk.calibration.thresholds import choose_threshold
from edge_sdk.runtime.engine import Engine
from edge_sdk.runtime.manifest import MapWeights, Normalization, Quantiles, Threshold
from edge_sdk.runtime.preprocess import to_model_input
from edge_sdk.runtime.scoring import MapScorer
from edge_sdk.runtime.tiled import TiledFrames, cut_tiles
from edge_sdk.runtime.tiling import RegionPlan, Tiling, plan_regions

Q_A, Q_B = 0.9, 0.995  # the paper's map normalisation quantiles


@dataclass(frozen=True)
class RawMaps:
    st: np.ndarray  # [N, h, w] float32
    ae: np.ndarray


MIN_SPLIT_IMAGES = 20  # below this, quantiles and threshold share the good images
QUANTILE_EVERY = 3  # with a split, every third good image sets the quantiles


def collect_raw_maps(
    engine: Engine,
    images: Iterable[np.ndarray],
    *,
    resize: str = "area",
    batch: int = 8,
    prepared: bool = False,
) -> RawMaps:
    """Run good images through the graph and keep both raw maps of each. ``prepared``:
    the images are graph input already ([3, H, W] RGB at the input size, e.g. tiles)."""
    h, w = engine.input_hw
    buf = np.zeros((batch, 3, h, w), dtype=np.uint8)
    st: list[np.ndarray] = []
    ae: list[np.ndarray] = []
    n = 0

    def flush(count: int) -> None:
        map_st, map_ae = engine.run(buf[:count])
        st.append(map_st[:, 0].copy())
        ae.append(map_ae[:, 0].copy())

    for image in images:
        if prepared:
            buf[n] = image
        else:
            to_model_input(image, buf[n], resize=resize)
        n += 1
        if n == batch:
            flush(n)
            n = 0
    if n:
        flush(n)
    if not st:
        raise ValueError("no images to calibrate on")
    return RawMaps(np.concatenate(st), np.concatenate(ae))


@dataclass(frozen=True)
class TiledRawMaps:
    """Each image's region plans and its tiles' raw maps (tiles in plan order)."""

    shapes: list[tuple[int, ...]]
    plans: list[list[RegionPlan]]
    maps: list[RawMaps]

    def pooled(self, images: Sequence[int]) -> RawMaps:
        """Every tile map of ``images``, as one stack: what the quantiles pool."""
        return RawMaps(
            np.concatenate([self.maps[i].st for i in images]),
            np.concatenate([self.maps[i].ae for i in images]),
        )


def collect_tiled_maps(
    engine: Engine, images: Iterable[np.ndarray], tiling: Tiling, *, resize: str, batch: int = 8
) -> TiledRawMaps:
    """Run each good image's tiles through the graph and keep their raw maps."""
    out = TiledRawMaps([], [], [])
    for image in images:
        plans = plan_regions(tiling, image.shape)
        tiles = cut_tiles(image, plans, tiling.grid.size, resize)
        out.shapes.append(image.shape)
        out.plans.append(plans)
        out.maps.append(collect_raw_maps(engine, tiles, batch=batch, prepared=True))
    if not out.maps:
        raise ValueError("no images to calibrate on")
    return out


def tiled_scores(
    maps: TiledRawMaps, images: Sequence[int], tiling: Tiling, norm: Normalization
) -> np.ndarray:
    """Each image's part score: the highest of its regions' stitched maps, as inspected."""
    frames = TiledFrames(tiling, MapScorer(norm), resize="area", max_batch=1)
    scores = []
    for i in images:
        raw = maps.maps[i]
        combined = [frames.scorer.combine(s, a) for s, a in zip(raw.st, raw.ae, strict=True)]
        scores.append(frames.assemble(maps.shapes[i], maps.plans[i], combined)[1])
    return np.array(scores)


def map_quantiles(maps: np.ndarray) -> Quantiles:
    """The 0.9 and 0.995 quantiles of every value of every map, exactly."""
    qa, qb = np.quantile(maps.astype(np.float64).ravel(), [Q_A, Q_B])
    if not qb > qa:  # a constant map (e.g. an untrained model) would divide by zero
        qb = qa + max(abs(qa), 1.0) * 1e-6
    return Quantiles(qa=float(qa), qb=float(qb))


def normalization_from(maps: RawMaps, **overrides: Any) -> Normalization:
    return Normalization(st=map_quantiles(maps.st), ae=map_quantiles(maps.ae), **overrides)


def image_scores(maps: RawMaps, norm: Normalization) -> np.ndarray:
    scorer = MapScorer(norm)
    return np.array(
        [scorer.score(scorer.combine(s, a)) for s, a in zip(maps.st, maps.ae, strict=True)]
    )


def split_indices(n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Indices of the good images that set the quantiles and of those that set the
    threshold, or None when `n` is below `MIN_SPLIT_IMAGES`.

    Interleaved rather than cut in two, so a folder sorted by time (lighting drifting over
    a shift) gives both halves the same conditions. Quantiles pool every pixel of every map
    and settle with few images; the threshold sees one score per image, so it gets two
    thirds.

    >>> quantile_idx, threshold_idx = split_indices(21)
    >>> quantile_idx.tolist()[:3], len(quantile_idx), len(threshold_idx)
    ([0, 3, 6], 7, 14)
    """
    if n < MIN_SPLIT_IMAGES:
        return None
    index = np.arange(n)
    chosen = index % QUANTILE_EVERY == 0
    return index[chosen], index[~chosen]


def calibrate(
    engine: Engine,
    good_images: Iterable[np.ndarray],
    *,
    resize: str = "area",
    target_frr: float = 0.01,
    source: str = "",
    bad_images: Iterable[np.ndarray] | None = None,
    policy: str | None = None,
    split: bool = False,
    bad_source: str = "",
    like: Normalization | None = None,
    weights: MapWeights | None = None,
    tiling: Tiling | None = None,
) -> tuple[Normalization, Threshold, dict[str, Any]]:
    """Quantiles, threshold and calibration record from held-out good images.

    The image threshold follows `edge_sdk.calibration.thresholds.choose_threshold`: by default the
    target false-reject rate on the good images (`threshold_for_false_reject_rate`), or
    with `bad_images` (labelled defective) the policy `policy` picks ("frr", "f1",
    "zero-escape", "strict"; the default with defective images is "strict"). The pixel
    threshold equals it, so the defect mask shows exactly the region that made a part NOK.

    With `split=True` and at least `MIN_SPLIT_IMAGES` good images, the quantiles come from
    every third image and the threshold from the others (`split_indices`), so the
    threshold is not measured on the images that set the normalisation; with fewer images
    both use all of them and the policy record says so.

    `like` keeps the map weights, padding and pad mode of an existing normalisation (a
    recalibrated bundle keeps its parent's); only the quantiles are measured. `weights`, when
    given, replaces the map weights (of `like`, or the reference's half and half): the
    threshold is then set on the scores those weights give.

    With `tiling` (a tiled bundle's), the quantiles pool every tile's map and each image's
    score is its part score: the highest of its regions' stitched maps, as the Inspector
    computes it.
    """

    if tiling is None:
        maps = collect_raw_maps(engine, good_images, resize=resize)
        n, map_size = int(maps.st.shape[0]), list(maps.st.shape[1:])

        def pooled(idx: Sequence[int]) -> RawMaps:
            return RawMaps(maps.st[idx], maps.ae[idx])

        def scores_of(idx: Sequence[int], norm: Normalization) -> np.ndarray:
            return image_scores(pooled(idx), norm)
    else:
        tiled = collect_tiled_maps(engine, good_images, tiling, resize=resize)
        n, map_size = len(tiled.maps), list(tiled.maps[0].st.shape[1:])

        def pooled(idx: Sequence[int]) -> RawMaps:
            return tiled.pooled(idx)

        def scores_of(idx: Sequence[int], norm: Normalization) -> np.ndarray:
            return tiled_scores(tiled, idx, tiling, norm)

    parts = split_indices(n) if split else None
    overrides: dict[str, Any] = {}
    if like is not None:
        overrides = {"weights": like.weights, "pad": like.pad, "pad_mode": like.pad_mode}
    if weights is not None:
        overrides["weights"] = weights
    split_record: dict[str, Any]
    if parts is None:
        everything = list(range(n))
        norm = normalization_from(pooled(everything), **overrides)
        scores = scores_of(everything, norm)
        split_record = {"quantile_images": n, "threshold_images": n, "same_images": True}
        if split:
            split_record["note"] = (
                f"only {n} good images (fewer than {MIN_SPLIT_IMAGES}): the quantiles and "
                "the threshold come from the same images, so the false-reject rate seen "
                "here is optimistic"
            )
    else:
        quantile_idx, threshold_idx = parts
        norm = normalization_from(pooled(quantile_idx.tolist()), **overrides)
        scores = scores_of(threshold_idx.tolist(), norm)
        split_record = {
            "quantile_images": int(quantile_idx.size),
            "threshold_images": int(threshold_idx.size),
            "same_images": False,
            "rule": f"every {QUANTILE_EVERY}rd good image, in the order given, sets the "
            "quantiles; the others set the threshold",
        }
    bad_scores = None
    weights_check: dict[str, Any] | None = None
    if bad_images is not None:
        if tiling is None:
            bad_maps = collect_raw_maps(engine, bad_images, resize=resize)

            def bad_scores_of(norm: Normalization) -> np.ndarray:
                return image_scores(bad_maps, norm)
        else:
            bad_tiled = collect_tiled_maps(engine, bad_images, tiling, resize=resize)

            def bad_scores_of(norm: Normalization) -> np.ndarray:
                return tiled_scores(bad_tiled, range(len(bad_tiled.maps)), tiling, norm)

        bad_scores = bad_scores_of(norm)
        good_idx = list(range(n)) if parts is None else parts[1].tolist()
        weights_check = map_weights_check(
            lambda w: (scores_of(good_idx, w), bad_scores_of(w)), norm
        )
    choice = choose_threshold(scores, bad_scores, policy=policy, target_frr=target_frr)
    policy_record = dict(choice.record)
    policy_record["split"] = split_record
    if "note" in split_record:
        policy_record["notes"] = [*policy_record["notes"], split_record["note"]]
    threshold = Threshold(image=choice.threshold, pixel=choice.threshold, policy=policy_record)
    record: dict[str, Any] = {"images": n, "source": source, "map_size": map_size}
    if bad_scores is not None:
        record.update(defective_images=int(bad_scores.size), defective_source=bad_source)
        record["map_weights_check"] = weights_check
    return norm, threshold, record


# The student map's shares of the weights that calibrating with defective images tries.
CHECKED_ST_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def map_weights_check(
    scores: Callable[[Normalization], tuple[np.ndarray, np.ndarray]], norm: Normalization
) -> dict[str, Any]:
    """How well the good and the defective images separate (image AUROC, 95 % interval) with
    the student map's share of the weights at each of :data:`CHECKED_ST_SHARES`, the
    quantiles unchanged; ``scores(norm)`` gives (good, defective) scores. Advice for
    ``--map-weights``, measured on the user's own defects: with few of them the intervals
    say how little it may mean.
    """
    from edge_sdk.statistics import auroc, auroc_interval

    rows = []
    for share in CHECKED_ST_SHARES:
        weights = MapWeights(st=share, ae=1.0 - share)
        good, bad = scores(norm.model_copy(update={"weights": weights}))
        interval = auroc_interval(good, bad)
        rows.append(
            {
                "st": share,
                "ae": 1.0 - share,
                "image_auroc": round(auroc(good, bad), 6),
                "image_auroc_95ci": None if interval is None else [round(v, 6) for v in interval],
            }
        )
    return {"good_images": int(good.size), "defective_images": int(bad.size), "rows": rows}
