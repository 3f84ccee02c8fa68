"""Metrics against hand-computed cases and against brute-force definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edge_sdk.evaluation.metrics import PixelScores, region_weights
from edge_sdk.statistics import auroc, auroc_difference, auroc_interval, rate, roc_curve


def brute_auroc(good: list[float], bad: list[float]) -> float:
    """Every pair, ties one half: the definition."""
    pairs = list(itertools.product(bad, good))
    return sum(1.0 if b > g else 0.5 if b == g else 0.0 for b, g in pairs) / len(pairs)


def mvtec_au_pro(maps: list[np.ndarray], masks: list[np.ndarray], limit: float = 0.3) -> float:
    """A direct port of MVTec AD's reference (pro_curve_util.compute_pro + trapezoid)."""
    import cv2

    fp_changes, pro_changes, scores = [], [], []
    num_ok, num_regions = 0, 0
    for amap, mask in zip(maps, masks, strict=True):
        n, labeled = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        num_regions += n - 1
        ok = labeled == 0
        num_ok += int(ok.sum())
        pro = np.zeros(mask.shape)
        for k in range(1, n):
            region = labeled == k
            pro[region] = 1.0 / region.sum()
        fp_changes.append(ok.ravel().astype(float))
        pro_changes.append(pro.ravel())
        scores.append(amap.ravel().astype(np.float64))
    s, fp, pr = (np.concatenate(a) for a in (scores, fp_changes, pro_changes))
    order = np.argsort(s, kind="stable")[::-1]
    s, fp, pr = s[order], np.cumsum(fp[order]) / num_ok, np.cumsum(pr[order]) / num_regions
    keep = np.append(np.diff(s) != 0, True)
    x = np.concatenate([[0.0], fp[keep], [1.0]])
    y = np.concatenate([[0.0], pr[keep], [1.0]])
    ins = int(np.searchsorted(x, limit, side="right"))
    correction = 0.0
    if x[ins - 1] != limit:
        y_at = y[ins - 1] + (y[ins] - y[ins - 1]) * (limit - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_at + y[ins - 1]) * (limit - x[ins - 1])
    inside = x <= limit
    xs, ys = x[inside], y[inside]
    return float((np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)) + correction) / limit)


# --- image AUROC -------------------------------------------------------------------------


def test_auroc_hand_computed() -> None:
    # good 0.1, 0.4; bad 0.35, 0.8: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3/4
    assert auroc([0.1, 0.4], [0.35, 0.8]) == 0.75


def test_auroc_ties_count_half() -> None:
    # pairs: (0.5 vs 0.5) x2 = 1, (1.0 vs 0.5) x2 = 2 -> 3/4
    assert auroc([0.5, 0.5], [0.5, 1.0]) == 0.75
    # bad 0.2: ties good 0.2, loses to 0.6; bad 0.9 beats both: (0.5 + 0 + 1 + 1) / 4
    assert auroc([0.2, 0.6], [0.2, 0.9]) == 0.625


def test_auroc_all_equal_is_chance() -> None:
    assert auroc([3.0] * 5, [3.0] * 7) == 0.5


def test_auroc_perfect_and_inverted() -> None:
    assert auroc([0, 1, 2], [3, 4]) == 1.0
    assert auroc([3, 4], [0, 1, 2]) == 0.0


def test_auroc_empty_class_is_nan() -> None:
    assert np.isnan(auroc([], [1.0]))
    assert np.isnan(auroc([1.0], []))


def test_auroc_nan_score_counts_as_rejected() -> None:
    # A failed inspection (NaN) outranks every good score.
    assert auroc([0.1, 0.2], [float("nan")]) == 1.0


def test_auroc_matches_pairs_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    good = rng.integers(0, 6, 40).astype(float).tolist()
    bad = rng.integers(2, 9, 25).astype(float).tolist()
    assert auroc(good, bad) == pytest.approx(brute_auroc(good, bad), abs=1e-12)


def test_auroc_interval_is_delong_from_every_pair() -> None:
    # DeLong's structural components from the pair matrix itself, ties counting one half.
    rng = np.random.default_rng(3)
    good = rng.integers(0, 8, 30) / 8
    bad = rng.integers(2, 10, 20) / 8
    pair = (bad[:, None] > good[None, :]) + 0.5 * (bad[:, None] == good[None, :])
    variance = pair.mean(1).var(ddof=1) / bad.size + pair.mean(0).var(ddof=1) / good.size
    half = 1.96 * math.sqrt(variance)
    interval = auroc_interval(good, bad)
    assert interval is not None
    assert interval == pytest.approx((pair.mean() - half, pair.mean() + half), abs=1e-12)


def test_auroc_interval_covers_the_true_area() -> None:
    # Scores N(0,1) for good and N(1,1) for defective parts: AUROC = Phi(1 / sqrt 2).
    true = 0.5 * (1 + math.erf(0.5))
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(400):
        interval = auroc_interval(rng.normal(0, 1, 60), rng.normal(1, 1, 40))
        assert interval is not None
        covered.append(interval[0] <= true <= interval[1])
    assert 0.91 <= np.mean(covered) <= 0.98


def test_auroc_difference_is_paired_delong_from_every_pair() -> None:
    rng = np.random.default_rng(4)
    latent_good, latent_bad = rng.normal(0, 1, 40), rng.normal(1, 1, 25)
    a = latent_good + rng.normal(0, 0.5, 40), latent_bad + rng.normal(0, 0.5, 25)
    b = np.round(latent_good + rng.normal(0, 0.8, 40), 1), latent_bad + rng.normal(0, 0.8, 25)

    def pairs(good: np.ndarray, bad: np.ndarray) -> np.ndarray:
        return (bad[:, None] > good[None, :]) + 0.5 * (bad[:, None] == good[None, :])

    diff = pairs(*a) - pairs(*b)
    variance = diff.mean(1).var(ddof=1) / 25 + diff.mean(0).var(ddof=1) / 40
    got = auroc_difference(a[0], a[1], b[0], b[1])
    assert got["difference"] == pytest.approx(auroc(*a) - auroc(*b), abs=1e-12)
    half = 1.96 * math.sqrt(variance)
    assert got["ci_low"] == pytest.approx(diff.mean() - half, abs=1e-12)
    assert got["ci_high"] == pytest.approx(diff.mean() + half, abs=1e-12)
    same = auroc_difference(a[0], a[1], a[0], a[1])
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="same parts"):
        auroc_difference(a[0], a[1], b[0][:-1], b[1])


def test_auroc_difference_rejects_equal_scorings_at_its_level() -> None:
    # Two scorings as good as each other: p < 0.05 about 5 % of the time; a better one often.
    rng = np.random.default_rng(5)
    equal, better = [], []
    for _ in range(300):
        good, bad = rng.normal(0, 1, 120), rng.normal(1, 1, 80)
        noise = [rng.normal(0, 1.0, n) for n in (120, 80, 120, 80)]
        a = (good + noise[0], bad + noise[1])
        b = (good + noise[2], bad + noise[3])
        equal.append(auroc_difference(*a, *b)["p_value"] < 0.05)
        sharp = (good + 0.1 * noise[2], bad + 0.1 * noise[3])
        better.append(auroc_difference(*sharp, *a)["p_value"] < 0.05)
    assert 0.02 <= np.mean(equal) <= 0.09
    assert np.mean(better) > 0.4


def test_auroc_interval_edges() -> None:
    assert auroc_interval([0.1], [0.5, 0.6]) is None  # no variance from one part
    assert auroc_interval([0.1, 0.2], [0.5, 0.6]) == (1.0, 1.0)  # separated: pROC's zero width
    assert auroc_interval([0.1, float("nan")], [0.5, 0.6]) is not None  # NaN is a reject


def test_roc_curve_area_equals_auroc_with_ties() -> None:
    good, bad = [0.1, 0.3, 0.3, 0.5], [0.3, 0.6, 0.7]
    curve = roc_curve(good, bad)
    assert curve.fpr[0] == 0 and curve.tpr[0] == 0 and curve.fpr[-1] == 1 and curve.tpr[-1] == 1
    area = float(np.sum(np.diff(curve.fpr) * (curve.tpr[1:] + curve.tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(good, bad)) == pytest.approx(brute_auroc(good, bad))
    # The tie at 0.3 is one diagonal step: from (1/4, 2/3) to (3/4, 1).
    k = list(curve.thresholds).index(0.3)
    assert (curve.fpr[k], curve.tpr[k]) == (0.75, 1.0)
    assert (curve.fpr[k - 1], curve.tpr[k - 1]) == (0.25, pytest.approx(2 / 3))


def test_rate_has_wilson_interval() -> None:
    r = rate(2, 100)
    assert r["rate"] == 0.02 and r["count"] == 2 and r["of"] == 100
    lo, hi = r["rate_95ci"]
    assert lo == pytest.approx(0.0055, abs=1e-4) and hi == pytest.approx(0.0700, abs=1e-4)
    assert rate(0, 0)["rate"] is None


# --- pixel AUROC -------------------------------------------------------------------------


def test_pixel_auroc_hand_computed() -> None:
    acc = PixelScores()
    # Image 1: defect pixels 0.9 and 0.5; good pixels 0.1 and 0.5.
    acc.add(np.array([[0.1, 0.5], [0.5, 0.9]], np.float32), np.array([[0, 0], [1, 1]], bool))
    # Image 2 (good): pixels 0.2, 0.95.
    acc.add(np.array([[0.2, 0.95]], np.float32), None)
    # good = {0.1, 0.5, 0.2, 0.95}; defect 0.5 beats 0.1, 0.2, ties 0.5 -> 2.5;
    # defect 0.9 beats 0.1, 0.5, 0.2 -> 3. (2.5 + 3) / 8
    assert acc.auroc() == pytest.approx(5.5 / 8, abs=0)
    assert (acc.good_pixels, acc.defect_pixels, acc.images, acc.regions) == (4, 2, 2, 1)


def test_pixel_auroc_matches_pairs_over_images_of_different_sizes() -> None:
    rng = np.random.default_rng(7)
    acc = PixelScores()
    good: list[float] = []
    bad: list[float] = []
    for h, w in [(5, 7), (9, 4), (6, 6)]:
        amap = rng.integers(0, 10, (h, w)).astype(np.float32) / 4  # many ties
        mask = rng.random((h, w)) < 0.3
        acc.add(amap, mask)
        good += amap[~mask].tolist()
        bad += amap[mask].tolist()
    assert acc.auroc() == pytest.approx(brute_auroc(good, bad), abs=1e-12)


def test_pixel_auroc_large_input_is_exact() -> None:
    # More than 2^24 values in all: no cap, no sampling. Values are integers, so the exact
    # answer is known in closed form: good uniform over 0..999, defects all 500.
    acc = PixelScores()
    good_block = np.tile(np.arange(1000, dtype=np.float32), 17_000).reshape(1000, 17_000)
    acc.add(good_block, None)
    defect = np.full((10, 100), 500, np.float32)
    acc.add(defect, np.ones_like(defect, bool))
    assert acc.good_pixels == 17_000_000 > 2**24
    # Each defect pixel: 500 good values below, 1 tied -> (500 + 0.5) / 1000
    assert acc.auroc() == pytest.approx(0.5005, abs=1e-12)


# --- AU-PRO -----------------------------------------------------------------------------


def test_au_pro_single_region_hand_computed() -> None:
    # 16 pixels: a 4-pixel region scoring 0.9, 0.8, 0.3, 0.2 and 12 good pixels 0.85, 0.5
    # and ten of 0.1. Curve points (FPR, PRO): (0, .25) (1/12, .25) (1/12, .5) (2/12, .5)
    # (2/12, 1) then (1, 1). Area to 0.3: .25/12 + .5/12 + 1 * (0.3 - 2/12).
    amap = np.array(
        [[0.9, 0.8, 0.85, 0.5], [0.3, 0.2] + [0.1] * 2, [0.1] * 4, [0.1] * 4], np.float32
    )
    mask = np.zeros((4, 4), bool)
    mask[0, :2] = mask[1, :2] = True
    acc = PixelScores()
    acc.add(amap, mask)
    expected = (0.25 / 12 + 0.5 / 12 + (0.3 - 2 / 12)) / 0.3
    assert acc.regions == 1
    assert acc.au_pro() == pytest.approx(expected, abs=1e-7)
    assert acc.au_pro() == pytest.approx(mvtec_au_pro([amap], [mask]), abs=1e-7)


def test_au_pro_weighs_regions_not_pixels() -> None:
    # A 1-pixel region fully found (score 1) and a 4-pixel region missed (score 0); good
    # pixels at 0.5. Until FPR 1 the PRO is (1 + 0) / 2 = 0.5, whatever the region sizes.
    amap = np.full((6, 6), 0.5, np.float32)
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = True
    amap[0, 0] = 1.0
    mask[3:5, 3:5] = True
    amap[3:5, 3:5] = 0.0
    acc = PixelScores()
    acc.add(amap, mask)
    assert acc.regions == 2
    assert acc.au_pro() == pytest.approx(0.5, abs=1e-12)
    # The same two regions in two images give the same curve.
    split = PixelScores()
    first, second = amap.copy(), amap.copy()
    first[3:5, 3:5] = 0.5  # each image holds one region, the rest is good at 0.5
    second[0, 0] = 0.5
    m1, m2 = np.zeros_like(mask), np.zeros_like(mask)
    m1[0, 0] = True
    m2[3:5, 3:5] = True
    split.add(first, m1)
    split.add(second, m2)
    assert split.regions == 2 and split.au_pro() == pytest.approx(0.5, abs=1e-12)


def test_au_pro_diagonal_regions_are_one_region() -> None:
    # 8-connectivity, as MVTec's scipy.ndimage.label with a 3x3 structure.
    mask = np.eye(4, dtype=bool)
    weights, regions = region_weights(mask)
    assert regions == 1 and np.allclose(weights, 0.25)


def test_au_pro_all_equal_scores() -> None:
    # One tie: the curve jumps from (0, 0) to (1, 1); cut at 0.3 its height is 0.3, the
    # area 0.3 * 0.3 / 2, normalised by 0.3: 0.15 (MVTec's reference gives the same).
    amap = np.full((5, 5), 0.7, np.float32)
    mask = np.zeros((5, 5), bool)
    mask[1:3, 1:3] = True
    acc = PixelScores()
    acc.add(amap, mask)
    assert acc.au_pro() == pytest.approx(0.15, abs=1e-12)
    assert acc.au_pro() == pytest.approx(mvtec_au_pro([amap], [mask]), abs=1e-12)
    assert acc.auroc() == 0.5


def test_au_pro_matches_mvtec_reference_on_random_maps() -> None:
    import cv2

    rng = np.random.default_rng(11)
    maps, masks = [], []
    acc = PixelScores()
    for h, w in [(40, 30), (25, 50), (30, 30), (20, 20)]:
        noise = rng.random((h, w)).astype(np.float32)
        amap = (cv2.GaussianBlur(noise, (0, 0), 2) * 50).round() / 50  # smooth, with ties
        mask = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(0, 3)):
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.circle(mask, (cx, cy), int(rng.integers(1, 6)), 1, -1)
        amap[mask > 0] += 0.1  # defects somewhat brighter
        maps.append(amap)
        masks.append(mask > 0)
        acc.add(amap, mask > 0)
    assert acc.regions > 0
    for limit in (0.3, 0.05, 1.0):
        assert acc.au_pro(limit) == pytest.approx(mvtec_au_pro(maps, masks, limit), abs=1e-9)


def test_au_pro_chunked_walk_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # Force tiny chunks so ties straddle chunk borders.
    from edge_sdk import statistics
    from edge_sdk.evaluation import metrics

    monkeypatch.setattr(metrics, "CHUNK", 7)  # the AU-PRO walk
    monkeypatch.setattr(statistics, "CHUNK", 7)  # the pixel AUROC's Mann-Whitney count
    rng = np.random.default_rng(5)
    amap = rng.integers(0, 12, (30, 30)).astype(np.float32)
    mask = np.zeros((30, 30), bool)
    mask[3:9, 4:8] = True
    mask[20:22, 20:29] = True
    amap[mask] += 3
    acc = PixelScores()
    acc.add(amap, mask)
    assert acc.au_pro() == pytest.approx(mvtec_au_pro([amap], [mask]), abs=1e-9)
    assert acc.auroc() == pytest.approx(
        brute_auroc(amap[~mask].tolist(), amap[mask].tolist()), abs=1e-12
    )


def test_no_regions_gives_none() -> None:
    acc = PixelScores()
    acc.add(np.zeros((4, 4), np.float32), np.zeros((4, 4), bool))  # an empty mask
    summary = acc.summary()
    assert summary["au_pro"] is None and summary["auroc"] is None
    assert summary["good_pixels"] == 16 and summary["defect_regions"] == 0
