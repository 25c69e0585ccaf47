"""Build `pynomaly_core/selection_kb.json`, the knowledge base of label-free meta-selection.

For every development dataset and seed (ADBench protocol, `pynomaly_core.bench.adbench_split`),
fit every knowledge-base detector with default parameters on the training part, record its
AUCROC on the test part, and the landmark meta-features of the training part.

Run:  .venv/bin/python benchmarks/build_selection_kb.py [--data ../shared/benchmarks/adbench]
      (about 40 minutes on 2 cores; `--scores FILE` saves/reuses the fitted scores)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from pynomaly_core.bench import adbench_split
from pynomaly_core.detectors.registry import get
from pynomaly_core.metaselect import KNOWLEDGE_BASE, LANDMARKS, features_from_scores

# Fast, default-parameter detectors the selection chooses among. PyOD's PCA is left out: its
# weighted scores are infinite on data with constant columns (optdigits, mnist).
DETECTORS = ["iforest", "knn", "lof", "copod", "ecod", "hbos", "ocsvm", "cblof", "loda", "mcd", "gmm", "inne", "kde", "sk_elliptic"]
SEEDS = (1, 2, 3)


def fit_scores(X, y, seed) -> dict:
    X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
    record = {"n_train": len(X_train), "aucroc": {}, "training_scores": {}}
    for name in DETECTORS:
        try:
            detector = get(name).build({}, 0.1, seed).fit(X_train)
            record["aucroc"][name] = float(roc_auc_score(y_test, detector.decision_function(X_test)))
            if name in LANDMARKS:
                record["training_scores"][name] = detector.decision_scores_.tolist()
        except ValueError:  # a detector that cannot fit this data ranks like a coin flip
            record["aucroc"][name] = 0.5
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "adbench")
    parser.add_argument("--scores", type=Path, help="JSON cache of the fitted scores: read if it exists, else written")
    args = parser.parse_args()
    if args.scores and args.scores.exists():
        records = json.loads(args.scores.read_text())
    else:
        records = {}
        for path in sorted(args.data.glob("*.npz"), key=lambda p: p.stem.lower()):
            with np.load(path) as data:
                X, y = data["X"].astype(np.float64), data["y"].astype(int)
            for seed in SEEDS:
                records[f"{path.stem}|{seed}"] = fit_scores(X, y, seed)
                print(path.stem, seed, {k: round(v, 3) for k, v in records[f"{path.stem}|{seed}"]["aucroc"].items()}, flush=True)
        if args.scores:
            args.scores.write_text(json.dumps(records))
    entries = []
    for key, record in records.items():
        dataset, seed = key.split("|")
        scores = {name: np.asarray(record["training_scores"][name]) for name in LANDMARKS}
        entries.append({
            "dataset": dataset,
            "seed": int(seed),
            "features": [round(float(v), 6) for v in features_from_scores(scores, record["n_train"])],
            "aucroc": {name: round(record["aucroc"][name], 4) for name in DETECTORS},
        })
    KNOWLEDGE_BASE.write_text(json.dumps({"detectors": DETECTORS, "landmarks": list(LANDMARKS), "entries": entries}, indent=1) + "\n")
    print(f"wrote {len(entries)} entries to {KNOWLEDGE_BASE}")


if __name__ == "__main__":
    main()
