"""Is bundle A better than bundle B on the same test set? The paired AUROC difference.

Two evaluations of one test set (``edge-ad eval --out DIR`` writes ``DIR/report.json``)
score the same parts. Their AUROCs' own intervals overlap far more than their difference
is uncertain: a part both bundles find hard is hard for both. DeLong's paired test
(:func:`edge_sdk.statistics.auroc_difference`) gives the difference with its 95 % interval
and p-value, overall and per defect type. It speaks of the test parts only: one training
run per bundle says nothing of how much a second seed would move either.

    python benchmarks/compare_evals.py runs/a.eval/report.json runs/b.eval/report.json

Files that keep every test image's score as lists in the test set's order pair the same
way, by position, for each data set both files hold: ``benchmarks/feature_knn.py``'s results
(the training-free proxy, one row per data set) and ``benchmarks/threshold_policies.py``'s
output (committed for bundles that did not outlive their machine). An eval report paired
with such a file is read in the same order. Paired by position, only "all defects" is
compared: the lists do not name defect types.

    python benchmarks/compare_evals.py runs/new.eval/report.json \
        benchmarks/results/threshold_policies_magnetic_tile_zen4_1000.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def scores(report: dict[str, Any]) -> dict[str, tuple[str | None, float]]:
    """Image path within the data set -> (defect type or None for a good part, score)."""
    root = os.path.normpath(report["data"]["path"])
    return {
        os.path.relpath(os.path.normpath(image["path"]), root): (
            image["defect_type"],
            float("nan") if image["score"] is None else image["score"],
        )
        for image in report["images"]
    }


def score_lists(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each data set a file scored -> an eval-report-like dict whose images are named by
    their position among the good or the defective test images."""
    if "images" in doc:  # an eval report: its images in the report's (the test set's) order
        by_path = scores(doc).values()  # dicts keep the report's order
        good = [score for defect, score in by_path if defect is None]
        bad = [score for defect, score in by_path if defect is not None]
        named = {os.path.basename(os.path.normpath(doc["data"]["path"])): (good, bad)}
    elif "scores" in doc:  # threshold_policies.py's output
        s = doc["scores"]
        named = {Path(doc["data"]).name: (s["test_good"], s["test_defective"])}
    else:  # feature_knn.py's results
        named = {
            row["data"]: (row["scores"]["test_good"], row["scores"]["test_defective"])
            for row in doc.get("rows", [])
            if "scores" in row
        }
    out = {}
    for name, (good, bad) in named.items():
        images = [
            {"path": f"{kind}/{i}", "defect_type": defect, "score": v}
            for kind, defect, values in (("good", None, good), ("defective", "defect", bad))
            for i, v in enumerate(values)
        ]
        out[name] = {"data": {"path": "."}, "images": images}
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row for all defects, then one per defect type: AUROC of each and A - B."""
    from edge_sdk.statistics import auroc, auroc_difference

    by_a, by_b = scores(a), scores(b)
    if by_a.keys() != by_b.keys():
        only = sorted(by_a.keys() ^ by_b.keys())
        raise SystemExit(f"the reports score different images, e.g. {only[:3]}")
    paths = sorted(by_a)
    good = [p for p in paths if by_a[p][0] is None]
    types = sorted({t for t, _ in by_a.values() if t is not None})
    groups = [("all defects", [p for p in paths if by_a[p][0] is not None])]
    groups += [(t, [p for p in paths if by_a[p][0] == t]) for t in types] if len(types) > 1 else []
    rows = []
    for name, bad in groups:
        if len(good) < 2 or len(bad) < 2:
            continue
        ga, ba = [by_a[p][1] for p in good], [by_a[p][1] for p in bad]
        gb, bb = [by_b[p][1] for p in good], [by_b[p][1] for p in bad]
        rows.append(
            {
                "defects": name,
                "good": len(good),
                "defective": len(bad),
                "auroc_a": auroc(ga, ba),
                "auroc_b": auroc(gb, bb),
                **auroc_difference(ga, ba, gb, bb),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "a", help="report.json of bundle A (or feature_knn results, threshold_policies output)"
    )
    parser.add_argument("b", help="the same of B, on the same test set")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    docs = [json.loads(Path(p).read_text()) for p in (args.a, args.b)]
    if all("images" in d for d in docs):
        rows = compare(*docs)
    else:
        lists = [score_lists(d) for d in docs]
        common = sorted(lists[0].keys() & lists[1].keys())
        if not common:
            raise SystemExit(
                "no data set scored in both files: give eval reports, feature_knn results "
                "or threshold_policies outputs of one data set"
            )
        rows = [{"data": name, **r} for name in common for r in compare(*(k[name] for k in lists))]
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "rows": rows}, indent=1))
        return 0
    print(f"A = {args.a}\nB = {args.b}")
    for r in rows:
        where = f"{r['data']} " if "data" in r else ""
        print(
            f"{where}{r['defects']:>14} ({r['defective']} vs {r['good']} good): "
            f"AUROC A {r['auroc_a']:.3f}, B {r['auroc_b']:.3f}, A - B {r['difference']:+.3f} "
            f"(95 % CI {r['ci_low']:+.3f} to {r['ci_high']:+.3f}, p = {r['p_value']:.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
