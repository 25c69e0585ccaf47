"""Does the consensus search's ensemble of its best trials pay off on test data?

For every development dataset and seed (ADBench protocol), the consensus search runs
(label-free, or with a fraction of anomalies revealed); its ensemble of the
`ensemble_size` best distinct trials replaces the best trial only when it wins on the selection
criterion. This script refits both, the best trial and the ensemble, and prints the test AUCROC
(%) of each and of the one chosen, per dataset and on average.

Run:  .venv/bin/python benchmarks/trial_ensemble.py --data ../shared/benchmarks/adbench [--seeds 1] [--n-trials 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score

from pynomaly_core.selection.bench import adbench_split, reveal_labels
from pynomaly_core.config import TrainConfig
from pynomaly_core.detectors.registry import get
from pynomaly_core.selection.base import ensemble_spec
from pynomaly_core.selection import make_selector


def compare(X, y, seed: int, train: TrainConfig, label_fraction: float) -> dict:
    X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
    known = reveal_labels(y_train, label_fraction, seed)
    selection = make_selector(train, seed=seed, study_name=f"ensemble-{seed}").select(X_train, known)
    record = selection.trial_ensemble
    if record is None:  # fewer than two distinct completed trials
        return {}
    # The ensemble's first member is the best trial (members are ranked by their trial's value).
    best = get(record["members"][0])
    models = {
        "best_trial": best.build(record["member_params"][0], train.contamination, seed).fit(X_train, known if best.needs_labels else None),
        "ensemble": ensemble_spec(record["members"], record["member_params"]).build({}, train.contamination, seed).fit(X_train, known),
    }
    aucs = {name: 100 * roc_auc_score(y_test, model.decision_function(X_test)) for name, model in models.items()}
    return {**aucs, "chosen": aucs["ensemble" if record["chosen"] else "best_trial"], "ensemble_chosen": record["chosen"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of ADBench <name>.npz files, e.g. ../shared/benchmarks/adbench")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--label-fraction", type=float, default=0.0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train = TrainConfig(strategy="consensus", n_trials=args.n_trials, storage="sqlite:///:memory:", progress_bar=False, use_labels=args.label_fraction > 0)
    rows = []
    for path in sorted(args.data.glob("*.npz"), key=lambda p: p.stem.lower()):
        with np.load(path) as data:
            X, y = data["X"].astype(np.float64), data["y"].astype(int)
        for seed in args.seeds:
            row = compare(X, y, seed, train, args.label_fraction)
            if row:
                rows.append({"dataset": path.stem, "seed": seed, **row})
                print(f"{path.stem:<12} seed {seed}: best trial {row['best_trial']:.2f}  ensemble {row['ensemble']:.2f}  chosen: "
                      f"{'ensemble' if row['ensemble_chosen'] else 'best trial'}", flush=True)
    table = pd.DataFrame(rows).groupby("dataset")[["best_trial", "ensemble", "chosen", "ensemble_chosen"]].mean()
    table.loc["MEAN"] = table.mean()
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
