"""Build `pynomaly_core/selection_kb.json`, the knowledge base of meta-selection.

For every development dataset and seed (ADBench protocol, `pynomaly_core.bench.adbench_split`),
fit every knowledge-base model on the training part, record its AUCROC on the test part, the
landmark meta-features of the training part, and how much the rank of one labelled anomaly
varies (the mean over models). `metaselect.calibration` weighs that variance against the
leave-one-dataset-out prediction error: how many labelled anomalies a prediction is worth when
few labels refine it.

Run:  .venv/bin/python benchmarks/build_selection_kb.py --data ../shared/benchmarks/adbench
      (about 12 minutes in one process on an idle machine; `--scores DIR` saves/reuses the fitted scores)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from pynomaly_core.bench import adbench_split
from pynomaly_core.detectors.registry import get
from pynomaly_core.metaselect import KNOWLEDGE_BASE, LANDMARKS, calibration, features_from_scores, model_name

# Fast detectors with default parameters, plus hyper-parameter variants of the cheap ones
# (MetaOD's models are detector-and-parameter pairs too). PyOD's PCA is left out: its weighted
# scores are infinite on data with constant columns (optdigits, mnist).
MODELS = [(name, {}) for name in ["iforest", "knn", "lof", "copod", "ecod", "hbos", "ocsvm", "cblof", "loda", "mcd", "gmm", "inne", "kde", "sk_elliptic"]] + [
    ("knn", {"n_neighbors": 10}), ("knn", {"n_neighbors": 20}), ("knn", {"n_neighbors": 50}),
    ("lof", {"n_neighbors": 10}), ("lof", {"n_neighbors": 40}), ("lof", {"n_neighbors": 80}),
    ("hbos", {"n_bins": 5}), ("hbos", {"n_bins": 30}),
    ("iforest", {"max_features": 0.5}), ("ocsvm", {"nu": 0.1, "gamma": "scale"}),
]
SEEDS = (1, 2, 3)


def fit_scores(X, y, seed) -> dict:
    """Per model: training and test scores (absent when the model cannot fit this data)."""
    X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
    scores = {"y_train": y_train, "y_test": y_test}
    for detector, params in MODELS:
        try:
            fitted = get(detector).build(dict(params), 0.1, seed).fit(X_train)
        except ValueError:
            continue
        scores[f"train:{model_name(detector, params)}"] = fitted.decision_scores_
        scores[f"test:{model_name(detector, params)}"] = fitted.decision_function(X_test)
    return scores


def entry(dataset: str, seed: int, scores) -> dict:
    y_train, y_test = scores["y_train"], scores["y_test"]
    record, rank_variances = {"dataset": dataset, "seed": seed, "aucroc": {}}, []
    for detector, params in MODELS:
        name = model_name(detector, params)
        if f"test:{name}" not in scores:  # a model that cannot fit this data ranks like a coin flip
            record["aucroc"][name] = 0.5
            continue
        record["aucroc"][name] = round(float(roc_auc_score(y_test, scores[f"test:{name}"])), 4)
        ranks = (rankdata(scores[f"train:{name}"]) - 1) / (len(y_train) - 1)
        rank_variances.append(np.var(ranks[y_train == 1]))
    landmarks = {name: scores[f"train:{name}"] for name in LANDMARKS}
    record["features"] = [round(float(v), 6) for v in features_from_scores(landmarks, len(y_train))]
    record["anomaly_rank_variance"] = round(float(np.mean(rank_variances)), 6)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of ADBench <name>.npz files, e.g. ../shared/benchmarks/adbench")
    parser.add_argument("--scores", type=Path, help="folder caching the fitted scores (one .npz per dataset and seed)")
    args = parser.parse_args()
    entries = []
    for path in sorted(args.data.glob("*.npz"), key=lambda p: p.stem.lower()):
        with np.load(path) as data:
            X, y = data["X"].astype(np.float64), data["y"].astype(int)
        for seed in SEEDS:
            cached = args.scores / f"{path.stem}_{seed}.npz" if args.scores else None
            if cached and cached.exists():
                scores = dict(np.load(cached))
            else:
                scores = fit_scores(X, y, seed)
                if cached:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(cached, **scores)
            entries.append(entry(path.stem, seed, scores))
            print(path.stem, seed, {k: round(v, 3) for k, v in entries[-1]["aucroc"].items()}, flush=True)
    models = [{"model": model_name(d, p), "detector": d, "params": p} for d, p in MODELS]
    kb = {"models": models, "landmarks": list(LANDMARKS), "entries": entries}
    KNOWLEDGE_BASE.write_text(json.dumps(kb, indent=1) + "\n")
    prior_labels, mean_spread = calibration(kb=kb)
    print(f"wrote {len(entries)} entries, {len(models)} models to {KNOWLEDGE_BASE}; prior_labels {prior_labels:.4f}, mean spread {mean_spread:.4f}")


if __name__ == "__main__":
    main()
