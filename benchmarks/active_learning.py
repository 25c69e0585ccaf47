"""Which 10 labels teach the next model most: the review queue's order, the top scores, or chance.

The analyst is simulated from the ground truth. For each dataset and seed, with the protocol of
`pynomaly bench` (ADBench sampling, stratified 70/30 split, MinMax scaling; `--lodo` by default:
the knowledge base without the dataset under test):

1. the label-free selection is fitted on the training part and scores it;
2. `--labels` training rows are picked three ways: the first of `active.review_order` (the
   queue), the highest scores, and at random (seeded);
3. the analyst reveals their true labels; the few-label selection (`train.use_labels`, the path
   of `pynomaly bench --label-fraction`) is retrained on the training part with them.

That path learns from labelled anomalies only: a row confirmed normal is as unknown to it as an
unlabelled one. A pick without any anomaly therefore leaves the label-free model in place.
Picks that reveal the same anomalies give the same model, and are fitted once.
Prints the test AUCROC of each, per dataset and on average (per folder and overall), with the
label-free model beside them, and writes every row to `--out` (CSV) as it goes.

Run:  nice -n 10 .venv/bin/python benchmarks/active_learning.py ../shared/benchmarks/adbench [--seeds 1] [--datasets NAME ...]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score

from pynomaly_core.selection import metaselect
from pynomaly_core.labels.review import member_scores, review_order
from pynomaly_core.selection.bench import adbench_split, described, load_dataset
from pynomaly_core.config import ThresholdConfig, TrainConfig
from pynomaly_core.selection import make_selector

PICKS = ("queue", "top_score", "random")


def picked_rows(model, X_train: np.ndarray, n_labels: int, seed: int) -> dict[str, np.ndarray]:
    """The training rows each way of picking hands to the analyst."""
    scores = model.decision_function(X_train)
    return {
        "queue": review_order(scores, member_scores(model, X_train), model.threshold_)[:n_labels],
        "top_score": np.argsort(-scores, kind="stable")[:n_labels],
        "random": np.random.default_rng(seed).choice(len(X_train), n_labels, replace=False),
    }


def run_one(X, y, seed: int, n_labels: int, kb: dict | None) -> dict:
    X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
    base = TrainConfig().model_copy(update={"storage": "sqlite:///:memory:", "progress_bar": False})

    def retrain(known: np.ndarray | None) -> tuple:
        """The selection's fitted model, its test AUCROC and what it chose."""
        train = base.model_copy(update={"use_labels": known is not None})
        selection = make_selector(train, ThresholdConfig(), seed, study_name=f"active-{seed}", knowledge_base=kb).select(X_train, known)
        return selection.model, round(float(roc_auc_score(y_test, selection.model.decision_function(X_test))), 4), described(selection)

    started = time.perf_counter()
    label_free, *outcome = retrain(None)
    row = {"seed": seed, "label_free": outcome[0], "label_free_detector": outcome[1]}
    retrained = {(): outcome}  # labelled anomalies -> (test AUCROC, detector)
    for way, rows in picked_rows(label_free, X_train, n_labels, seed).items():
        anomalies = tuple(sorted(int(r) for r in rows if y_train[r] == 1))
        if anomalies not in retrained:
            known = np.zeros_like(y_train)
            known[list(anomalies)] = 1
            retrained[anomalies] = retrain(known)[1:]
        row[way], row[f"{way}_detector"] = retrained[anomalies]
        row[f"{way}_anomalies"] = len(anomalies)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per dataset (AUCROC %), then the mean of each group of datasets and of all."""
    columns = ["label_free", *PICKS, *(f"{way}_anomalies" for way in PICKS)]
    table = frame.groupby(["group", "dataset"], sort=False)[columns].mean()
    table[list(("label_free", *PICKS))] *= 100
    means = [table.xs(group, drop_level=False).mean().rename((group, "MEAN")) for group in frame["group"].unique()]
    rows = [table, *(m.to_frame().T for m in means)]
    if frame["group"].nunique() > 1:
        rows.append(table.mean().rename(("all", "MEAN")).to_frame().T)
    return pd.concat(rows).round(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", type=Path, nargs="+", help="folders of ADBench <name>.npz files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--labels", type=int, default=10, help="labels the analyst gives")
    parser.add_argument("--datasets", nargs="+", help="only these datasets (file names without .npz)")
    parser.add_argument("--exclude", nargs="+", default=[], help="leave these datasets out")
    parser.add_argument("--no-lodo", action="store_true", help="keep the dataset under test in the knowledge base")
    parser.add_argument("--out", type=Path, default=Path("active_learning.csv"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")  # MCD's convergence warnings, thousands per dataset, drown the figures
    paths = [p for folder in args.data_dirs for p in sorted(folder.glob("*.npz"), key=lambda p: p.stem.lower())]
    paths = [p for p in paths if (args.datasets is None or p.stem in args.datasets) and p.stem not in args.exclude]
    if not paths:
        parser.error(f"no .npz dataset to run in {', '.join(map(str, args.data_dirs))}")
    rows = []
    for path in paths:
        X, y = load_dataset(path)
        kb = None if args.no_lodo else metaselect.without_rows_of(X)[0]
        for seed in args.seeds:
            row = {"group": path.parent.name, "dataset": path.stem, **run_one(X, y, seed, args.labels, kb)}
            rows.append(row)
            print(", ".join(f"{key} {value}" for key, value in row.items()), flush=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)
    print(summary(pd.DataFrame(rows)).to_string())
    print(f"{args.labels} labels per dataset and seed; seeds {args.seeds}; raw rows -> {args.out}")


if __name__ == "__main__":
    main()
