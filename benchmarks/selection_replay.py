"""Replay label-free selection rules on cached scores, leave one dataset out, against IForest.

Every rule sees a knowledge base without the dataset under test (and without any development
dataset sharing its rows); the shipped rule (`anchored half, fitted reach`) re-fits its constant on
that knowledge base, so nothing is tuned on the dataset it is measured on. Ensembles are scored
exactly as `RankEnsemble` scores them, from the cached scores of
`benchmarks/build_selection_kb.py --scores CACHE`, so no detector is fitted here.

Run:  .venv/bin/python benchmarks/selection_replay.py --scores CACHE --kb-data DIR [DIR ...] --test-data DIR [DIR ...]
      e.g. --kb-data adbench --test-data adbench (LODO in one group); --kb-data adbench --test-data adbench-extra
      (the classical knowledge base, applied to the embedding sets it has never seen).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from build_selection_kb import SEEDS, build
from pynomaly_core.selection import metaselect
from pynomaly_core.selection.bench import load_dataset
from pynomaly_core.detectors.ensemble import rank_average

FIXED = ["iforest", "copod", "hbos", "knn", "ecod"]  # the plain rank average people use (PyOD's PCA is not in the KB)


def ensemble_aucroc(scores: dict, members: list[str], weights: list[float] | None = None) -> float:
    """Test AUCROC of the rank ensemble of `members`: each test score's percentile among that member's training scores, averaged.
    A member that could not fit (no cached scores) is left out with its weight, as `RankEnsemble` leaves it out."""
    weights = weights or [1] * len(members)
    fitted = [(m, w) for m, w in zip(members, weights) if f"train:{m}" in scores]
    averaged = rank_average([np.sort(scores[f"train:{m}"]) for m, _ in fitted], [scores[f"test:{m}"] for m, _ in fitted], [w for _, w in fitted])
    return float(roc_auc_score(scores["y_test"], averaged))


def rules(features: np.ndarray, kb: dict, size: int, shape: tuple[int, int]) -> dict[str, tuple[list[str], list[float] | None]]:
    """Each rule's members and weights (None: equal), among the models the selector would fit on data of this shape."""
    allowed, _ = metaselect.affordable_models(kb, shape, None)
    near, overall = metaselect.neighbours(features, kb), metaselect.overall_aucroc(kb)
    local, everywhere = metaselect.Prediction(near, overall, np.inf), metaselect.Prediction(near, overall, 0.0)
    shipped = metaselect.predict(features, kb, size).ensemble(size, allowed)
    return {
        "iforest": (["iforest"], None),
        "fixed average of 5": (FIXED, None),
        "neighbours top-3 (before)": ([name for name, _ in local.ranking() if name in allowed][:size], None),
        "overall top-3": ([name for name, _ in everywhere.ranking() if name in allowed][:size], None),
        "anchored, neighbours": (local.ensemble(size, allowed), None),
        "anchored, overall": (everywhere.ensemble(size, allowed), None),
        "anchored, fitted reach": (shipped, None),
        "anchored half, fitted reach (shipped)": (shipped, metaselect.anchored_weights(shipped)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--kb-data", type=Path, nargs="+", required=True)
    parser.add_argument("--test-data", type=Path, nargs="+", required=True)
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    kb_paths = sorted((p for folder in args.kb_data for p in folder.glob("*.npz")), key=lambda p: p.stem.lower())  # the builder's order
    kb = build(kb_paths, args.scores, progress=lambda *line: None)
    rows = []
    for path in sorted((p for folder in args.test_data for p in folder.glob("*.npz")), key=lambda p: p.stem.lower()):
        X, _ = load_dataset(path)
        reduced, left_out = metaselect.without_rows_of(X, kb)
        for seed in SEEDS:
            scores = dict(np.load(args.scores / f"{path.stem}_{seed}.npz"))
            landmarks = {name: scores[f"train:{name}"] for name in metaselect.LANDMARKS}
            features = metaselect.features_from_scores(landmarks, len(scores["y_train"]), X.shape[1])
            for rule, (members, weights) in rules(features, reduced, args.size, X.shape).items():
                rows.append({"dataset": path.stem, "seed": seed, "rule": rule, "aucroc": 100 * ensemble_aucroc(scores, members, weights),
                             "members": "+".join(members), "left_out": ",".join(left_out)})
    frame = pd.DataFrame(rows)
    if args.out:
        frame.to_csv(args.out, index=False)
    table = frame.groupby(["dataset", "rule"])["aucroc"].mean().unstack()
    difference = table.sub(table["iforest"], axis=0)
    summary = pd.DataFrame({
        "mean": table.mean(), "vs iforest": difference.mean(), "wins": (difference > 0).sum(), "losses": (difference < 0).sum(),
        "worst": difference.min(), "worst dataset": difference.idxmin(), "below -5": (difference < -5).sum(),
    })
    pd.set_option("display.width", 200)
    print(difference.round(1).to_string())
    print(summary.round(2).to_string())


if __name__ == "__main__":
    main()
