"""Build `pynomaly_core/selection_kb.json`, the knowledge base of meta-selection.

For every development dataset and seed (ADBench protocol, `pynomaly_core.bench.adbench_split`),
fit every knowledge-base model on the training part, record its AUCROC on the test part and the
seconds it took to fit and score, the landmark meta-features of the training part, and how much the rank of one labelled
anomaly varies (the mean over models). Each dataset also gets a sketch of its rows, so
`pynomaly bench --lodo` leaves out every development dataset that shares rows with the one
under test, whatever its file is called.

BLAS runs on one thread and every fit is seeded, so a rebuild gives the same file, fit times
aside (tests/test_selection_kb.py rebuilds two datasets' entries and compares).

Run:  .venv/bin/python benchmarks/build_selection_kb.py DATA_DIR [DATA_DIR ...] [--scores CACHE]
      (`--scores` saves and reuses the fitted scores, one .npz per dataset and seed)
      .venv/bin/python benchmarks/build_selection_kb.py DATA_DIR [DATA_DIR ...] --refit ecod copod
      (after a change to how those detectors score new rows: their models fitted again, every other figure kept)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from pynomaly_core.selection.bench import adbench_split, load_dataset
from pynomaly_core.detectors.base import FIT_ERRORS
from pynomaly_core.detectors.registry import get
from pynomaly_core.selection.metaselect import CUBIC, KNOWLEDGE_BASE, LANDMARKS, MAX_CUBIC_FEATURES, features_from_scores, sketch
from pynomaly_core.detectors.spec import model_name

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


def fit_scores(X, y, seed, models=MODELS) -> dict:
    """Per model: training and test scores and fit seconds (absent when the model cannot or may not fit this data)."""
    X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
    scores = {"y_train": y_train, "y_test": y_test}
    for detector, params in models:
        if detector in CUBIC and X.shape[1] > MAX_CUBIC_FEATURES:
            continue
        name = model_name(detector, params)
        started = time.perf_counter()
        try:
            fitted = get(detector).build(dict(params), 0.1, seed).fit(X_train)
        except FIT_ERRORS:
            continue
        scores[f"train:{name}"] = fitted.decision_scores_
        scores[f"test:{name}"] = fitted.decision_function(X_test)
        scores[f"seconds:{name}"] = np.array(time.perf_counter() - started)
    return scores


def measured(scores, name: str) -> tuple[float, float]:
    """A fitted model's test AUCROC and fit seconds, as the knowledge base records them."""
    return round(float(roc_auc_score(scores["y_test"], scores[f"test:{name}"])), 4), round(float(scores[f"seconds:{name}"]), 3)


def entry(dataset: str, seed: int, scores, n_features: int) -> dict:
    y_train, y_test = scores["y_train"], scores["y_test"]
    record = {"dataset": dataset, "seed": seed, "rows": len(y_train), "n_features": n_features, "aucroc": {}, "fit_seconds": {}}
    rank_variances = []
    for detector, params in MODELS:
        name = model_name(detector, params)
        if f"test:{name}" not in scores:  # a model that cannot fit this data ranks like a coin flip
            record["aucroc"][name] = 0.5
            continue
        record["aucroc"][name], record["fit_seconds"][name] = measured(scores, name)
        ranks = (rankdata(scores[f"train:{name}"]) - 1) / (len(y_train) - 1)
        rank_variances.append(np.var(ranks[y_train == 1]))
    landmarks = {name: scores[f"train:{name}"] for name in LANDMARKS}
    record["features"] = [round(float(v), 6) for v in features_from_scores(landmarks, len(y_train), n_features)]
    record["anomaly_rank_variance"] = round(float(np.mean(rank_variances)), 6)
    return record


def build(paths: list[Path], scores_dir: Path | None = None, progress=print) -> dict:
    entries, datasets = [], {}
    with threadpool_limits(1):  # multi-threaded BLAS sums in another order: the figures would move
        for path in paths:
            X, y = load_dataset(path)
            datasets[path.stem] = {"rows": len(X), "n_features": X.shape[1], "sketch": sketch(X)}
            for seed in SEEDS:
                cached = scores_dir / f"{path.stem}_{seed}.npz" if scores_dir else None
                if cached and cached.exists():
                    scores = dict(np.load(cached))
                else:
                    scores = fit_scores(X, y, seed)
                    if cached:
                        cached.parent.mkdir(parents=True, exist_ok=True)
                        np.savez(cached, **scores)
                entries.append(entry(path.stem, seed, scores, X.shape[1]))
                progress(path.stem, seed, {k: round(v, 3) for k, v in entries[-1]["aucroc"].items()})
    models = [{"model": model_name(d, p), "detector": d, "params": p} for d, p in MODELS]
    return {"models": models, "landmarks": list(LANDMARKS), "datasets": datasets, "entries": entries}


def refit(kb: dict, paths: list[Path], detectors: list[str], progress=print) -> dict:
    """`kb` with the models of `detectors` fitted again on every dataset and seed. For a change to how those detectors
    score new rows that keeps their training scores: the landmark features and rank variances stay as they are
    (tests/test_selection_kb.py rebuilds two datasets in full and compares every figure)."""
    models = [(detector, params) for detector, params in MODELS if detector in detectors]
    entries = {(e["dataset"], e["seed"]): e for e in kb["entries"]}
    with threadpool_limits(1):
        for path in paths:
            X, y = load_dataset(path)
            for seed in SEEDS:
                scores, record = fit_scores(X, y, seed, models), entries[(path.stem, seed)]
                for detector, params in models:
                    name = model_name(detector, params)
                    if f"test:{name}" in scores:
                        record["aucroc"][name], record["fit_seconds"][name] = measured(scores, name)
                progress(path.stem, seed, {model_name(d, p): record["aucroc"][model_name(d, p)] for d, p in models})
    return kb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="+", help="folders of <name>.npz datasets (X, y)")
    parser.add_argument("--scores", type=Path, help="folder caching the fitted scores (one .npz per dataset and seed)")
    parser.add_argument("--out", type=Path, default=KNOWLEDGE_BASE)
    parser.add_argument("--refit", nargs="+", metavar="DETECTOR", help="fit only these detectors' models again, in the knowledge base at --out")
    args = parser.parse_args()
    paths = sorted((p for folder in args.data for p in folder.glob("*.npz")), key=lambda p: p.stem.lower())

    def progress(*line):
        print(*line, flush=True)

    if args.refit:
        kb = refit(json.loads(args.out.read_text()), paths, args.refit, progress)
    else:
        kb = build(paths, args.scores, progress)
    args.out.write_text(json.dumps(kb, indent=1) + "\n")
    print(f"wrote {len(kb['entries'])} entries of {len(kb['datasets'])} datasets, {len(kb['models'])} models to {args.out}")


if __name__ == "__main__":
    main()
