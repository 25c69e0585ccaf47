"""`pynomaly bench`: the model selection of the `train` stage, measured with the ADBench protocol.

For each seed: resample to 1000 rows below 1000, subsample 10000 above; stratified 70/30
split; MinMax scaling fitted on the training part; selection and fit on the training part
with its labels hidden (or a fraction of its anomalies revealed); AUCROC on the test part, and
the false-positive rate of the model's threshold on the test part's normal rows. A default
IForest is fitted on the same split in the same run, so every figure has its baseline beside it.
With `leave_one_out`, the selector gets a knowledge base without every development dataset that
shares rows with the one under test (`metaselect.without_rows_of`), found by content, not by name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

from sklearn.metrics import roc_auc_score

from . import metaselect
from ..config import ThresholdConfig, TrainConfig
from ..detectors import registry
from ..evaluation.metrics import metrics
from ..detectors.spec import model_name
from . import make_selector


def load_dataset(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An ADBench `.npz`: features `X` and labels `y` (1 = anomaly)."""
    with np.load(path) as data:
        return data["X"].astype(np.float64), data["y"].astype(int)


def adbench_split(X: np.ndarray, y: np.ndarray, seed: int):
    """The ADBench protocol's sampling, split and scaling for one seed."""
    np.random.seed(seed)  # the protocol seeds NumPy's global generator
    if len(X) < 1000:
        rows = np.random.choice(len(X), 1000, replace=True)
        X, y = X[rows], y[rows]
    elif len(X) > 10000:
        rows = np.random.choice(len(X), 10000, replace=False)
        X, y = X[rows], y[rows]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, shuffle=True, stratify=y)
    scaler = MinMaxScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def reveal_labels(y_train: np.ndarray, fraction: float, seed: int) -> np.ndarray | None:
    """Known anomalies for the few-label setting: 1 for the revealed ones, 0 for every other row.

    Nothing is revealed about the other rows: a 0 means "unknown", not "normal".
    """
    if fraction <= 0:
        return None
    anomalies = np.flatnonzero(y_train == 1)
    count = max(1, int(round(fraction * len(anomalies))))
    revealed = np.random.default_rng(seed).choice(anomalies, count, replace=False)
    known = np.zeros_like(y_train)
    known[revealed] = 1
    return known


def described(selection) -> str:
    """The detector with its parameters (`knn(n_neighbors=20)`); an ensemble's members so, with
    their weights when they differ (`knn(n_neighbors=20)+iforest+pu_logistic (weights 1, 1, 2)`)."""
    members = selection.params.get("members")
    if members is None:
        return model_name(selection.detector, selection.params)
    names = "+".join(map(model_name, members, selection.params.get("member_params") or [{}] * len(members)))
    weights = selection.params.get("weights")
    if weights is None or len(set(weights)) == 1:
        return names
    return f"{names} (weights {', '.join(f'{w:g}' for w in weights)})"


def run_one(
    X, y, seed: int, label_fraction: float, train: TrainConfig, knowledge_base: dict | None = None, threshold: ThresholdConfig = ThresholdConfig()
) -> dict:
    X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
    known = reveal_labels(y_train, label_fraction, seed)
    started = time.perf_counter()
    selector = make_selector(train, threshold, seed, study_name=f"bench-{seed}", knowledge_base=knowledge_base)
    selection = selector.select(X_train, known)
    fit_seconds = time.perf_counter() - started
    test = metrics(selection.model.decision_function(X_test), selection.model.threshold_, y_test)
    iforest = registry.get("iforest").build({}, train.contamination, seed).fit(X_train)
    return {
        "seed": seed,
        "aucroc": round(test["roc_auc"], 4),
        "iforest_aucroc": round(float(roc_auc_score(y_test, iforest.decision_function(X_test))), 4),
        "aucpr": round(test["pr_auc"], 4),
        "threshold_fpr": round(test["false_positive_rate"], 4),
        "detector": described(selection),
        "skipped": selection.skipped,
        "fit_seconds": round(fit_seconds, 2),
    }


def run_benchmark(
    data_dir: Path,
    label_fraction: float,
    seeds: list[int],
    train: TrainConfig,
    progress=print,
    leave_one_out: bool = False,
    threshold: ThresholdConfig = ThresholdConfig(),
) -> dict:
    """With `leave_one_out`, meta-selection forgets what it learned from the dataset under test
    (and from any development dataset sharing its rows)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per dataset and seed instead
    results, errors = [], []
    for path in sorted(Path(data_dir).glob("*.npz"), key=lambda p: p.stem.lower()):
        try:
            X, y = load_dataset(path)
            kb, left_out = metaselect.without_rows_of(X) if leave_one_out else (None, [])
        except Exception as err:
            errors.append({"dataset": path.stem, "error": f"{type(err).__name__}: {err}"})
            progress(f"{path.stem:<12} FAILED {type(err).__name__}: {err}")
            continue
        for seed in seeds:
            try:  # one dataset failing must not stop the others
                row = {"dataset": path.stem, **run_one(X, y, seed, label_fraction, train, kb, threshold), "left_out": left_out}
            except Exception as err:
                errors.append({"dataset": path.stem, "seed": seed, "error": f"{type(err).__name__}: {err}"})
                progress(f"{path.stem:<12} seed {seed}: FAILED {type(err).__name__}: {err}")
                continue
            results.append(row)
            progress(
                f"{path.stem:<12} seed {seed}: aucroc {row['aucroc']:.4f}, fpr {row['threshold_fpr']:.4f} "
                f"with {row['detector']} ({row['fit_seconds']:.1f} s)"
            )
    frame = pd.DataFrame(results)
    # Mean over seeds per dataset, then over datasets.
    per_dataset = frame.groupby("dataset")[["aucroc", "iforest_aucroc", "threshold_fpr"]].mean() if len(frame) else None
    return {
        "protocol": "adbench",
        "label_fraction": label_fraction,
        "strategy": train.strategy,
        "leave_one_dataset_out": leave_one_out,
        "target_fpr": threshold.target_fpr,
        "results": results,
        "errors": errors,
        "mean_aucroc": round(float(per_dataset["aucroc"].mean()), 4) if per_dataset is not None else None,
        "mean_iforest_aucroc": round(float(per_dataset["iforest_aucroc"].mean()), 4) if per_dataset is not None else None,
        "mean_threshold_fpr": round(float(per_dataset["threshold_fpr"].mean()), 4) if per_dataset is not None else None,
    }


def comparison_table(report: dict, anchors_csv: Path | None = None) -> pd.DataFrame:
    """Per-dataset mean AUCROC (%) beside a default IForest on the same splits, the difference,
    and the paper's anchors (IForest and the per-dataset best of 14) when `anchors_csv` exists."""
    means = pd.DataFrame(report["results"]).groupby("dataset")[["aucroc", "iforest_aucroc"]].mean().mul(100)
    table = means.rename(columns={"aucroc": "pynomaly", "iforest_aucroc": "iforest"})
    table["difference"] = table["pynomaly"] - table["iforest"]
    if anchors_csv is not None and anchors_csv.exists():
        anchors = pd.read_csv(anchors_csv).set_index("dataset").apply(pd.to_numeric, errors="coerce")
        table = table.join(anchors["IForest"].rename("paper_iforest")).join(anchors.max(axis=1).rename("paper_best_of_14"))
    table.loc["MEAN"] = table.mean()
    return table.round(2)


def against_iforest(table: pd.DataFrame) -> str:
    """Wins, losses and the worst loss against IForest: a mean alone hides the losses that sink a default."""
    difference = table.drop(index="MEAN")["difference"]
    worst = difference.idxmin()
    return (f"against IForest: mean {difference.mean():+.2f}, {int((difference > 0).sum())} wins, {int((difference < 0).sum())} losses, "
            f"worst {difference.min():+.2f} ({worst})")


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
