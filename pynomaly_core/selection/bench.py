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

import functools
import json
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from joblib import Parallel, delayed
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


def reveal_labels(y_train: np.ndarray, fraction: float, seed: int, count: int | None = None) -> np.ndarray | None:
    """Known anomalies for the few-label setting: 1 for the revealed ones, 0 for every other row.

    `fraction` of the training anomalies (at least one), or `count` of them as an analyst gives
    them (all of them where there are fewer). Nothing is revealed about the other rows: a 0
    means "unknown", not "normal".
    """
    if not count and fraction <= 0:
        return None
    anomalies = np.flatnonzero(y_train == 1)
    count = min(count, len(anomalies)) if count else max(1, int(round(fraction * len(anomalies))))
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


PLAIN_PU = ("pu_boost", {"learner": "catboost"})


def plain_pu_aucroc(X_train, known, X_test, y_test, seed: int, selection=None) -> float:
    """The strongest published few-label baseline on the same split and labels: ADBench's CatBoost
    of the labelled anomalies against every other row, library defaults (Han et al. 2022, Table D6).

    Where the selection is that classifier fitted on every training row (the default strategy with
    labels, no calibration rows held aside), its model is the same seeded fit: it is scored, not
    fitted again (a CatBoost fit on the 768-column embedding sets takes one to six minutes here)."""
    if selection is not None and (selection.detector, selection.params) == PLAIN_PU and len(selection.model.decision_scores_) == len(X_train):
        model = selection.model
    else:
        detector, params = PLAIN_PU
        model = registry.get(detector).build(params, 0.1, seed).fit(X_train, known)
    return float(roc_auc_score(y_test, model.decision_function(X_test)))


def run_one(
    X, y, seed: int, label_fraction: float, train: TrainConfig, knowledge_base: dict | None = None, threshold: ThresholdConfig = ThresholdConfig(),
    label_count: int | None = None,
) -> dict:
    X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
    known = reveal_labels(y_train, label_fraction, seed, count=label_count)
    started = time.perf_counter()
    selector = make_selector(train, threshold, seed, study_name=f"bench-{seed}", knowledge_base=knowledge_base)
    selection = selector.select(X_train, known)
    fit_seconds = time.perf_counter() - started
    test = metrics(selection.model.decision_function(X_test), selection.model.threshold_, y_test)
    iforest = registry.get("iforest").build({}, train.contamination, seed).fit(X_train)
    baselines = {"iforest_aucroc": round(float(roc_auc_score(y_test, iforest.decision_function(X_test))), 4)}
    if known is not None:
        baselines |= {"n_labelled": int(known.sum()), "pu_aucroc": round(plain_pu_aucroc(X_train, known, X_test, y_test, seed, selection), 4)}
    return {
        "seed": seed,
        "aucroc": round(test["roc_auc"], 4),
        **baselines,
        "aucpr": round(test["pr_auc"], 4),
        "threshold_fpr": round(test["false_positive_rate"], 4),
        "detector": described(selection),
        "skipped": selection.skipped,
        "fit_seconds": round(fit_seconds, 2),
    }


def bench_one(path: Path, seed: int, label_fraction: float, train: TrainConfig, leave_one_out: bool, threshold: ThresholdConfig,
              label_count: int | None) -> dict:
    """One dataset and seed: its result row, or its error (one failing must not stop the others)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per dataset and seed instead
    try:
        X, y = load_dataset(path)
        kb, left_out = metaselect.without_rows_of(X) if leave_one_out else (None, [])
        return {"dataset": path.stem, **run_one(X, y, seed, label_fraction, train, kb, threshold, label_count), "left_out": left_out}
    except Exception as err:
        return {"dataset": path.stem, "seed": seed, "error": f"{type(err).__name__}: {err}"}


def run_benchmark(
    data_dir: Path,
    label_fraction: float,
    seeds: list[int],
    train: TrainConfig,
    progress=print,
    leave_one_out: bool = False,
    threshold: ThresholdConfig = ThresholdConfig(),
    label_count: int | None = None,
    jobs: int = 1,
) -> dict:
    """With `leave_one_out`, meta-selection forgets what it learned from the dataset under test
    (and from any development dataset sharing its rows). With `jobs` > 1 the datasets and seeds
    run side by side in that many processes; the report is the same."""
    paths = sorted(Path(data_dir).glob("*.npz"), key=lambda p: p.stem.lower())
    run = functools.partial(bench_one, label_fraction=label_fraction, train=train, leave_one_out=leave_one_out,
                            threshold=threshold, label_count=label_count)
    tasks = [(path, seed) for path in paths for seed in seeds]
    # In order as they finish in turn; one job runs them here, in this process.
    outcomes = Parallel(n_jobs=jobs, return_as="generator")(delayed(run)(path, seed) for path, seed in tasks)
    results, errors = [], []
    for row in outcomes:
        if "error" in row:
            errors.append(row)
            progress(f"{row['dataset']:<12} seed {row['seed']}: FAILED {row['error']}")
            continue
        results.append(row)
        progress(
            f"{row['dataset']:<12} seed {row['seed']}: aucroc {row['aucroc']:.4f}, fpr {row['threshold_fpr']:.4f} "
            f"with {row['detector']} ({row['fit_seconds']:.1f} s)"
        )
    frame = pd.DataFrame(results)
    # Mean over seeds per dataset, then over datasets.
    columns = ["aucroc", "iforest_aucroc", "threshold_fpr", *(["pu_aucroc"] if "pu_aucroc" in frame else [])]
    per_dataset = frame.groupby("dataset")[columns].mean() if len(frame) else None
    return {
        "protocol": "adbench",
        "label_fraction": label_fraction,
        "label_count": label_count,
        "strategy": train.strategy,
        "leave_one_dataset_out": leave_one_out,
        "target_fpr": threshold.target_fpr,
        "results": results,
        "errors": errors,
        "mean_aucroc": round(float(per_dataset["aucroc"].mean()), 4) if per_dataset is not None else None,
        "mean_iforest_aucroc": round(float(per_dataset["iforest_aucroc"].mean()), 4) if per_dataset is not None else None,
        "mean_threshold_fpr": round(float(per_dataset["threshold_fpr"].mean()), 4) if per_dataset is not None else None,
        "mean_pu_aucroc": round(float(per_dataset["pu_aucroc"].mean()), 4) if per_dataset is not None and "pu_aucroc" in per_dataset else None,
    }


def comparison_table(report: dict, anchors_csv: Path | None = None) -> pd.DataFrame:
    """Per-dataset mean AUCROC (%) beside a default IForest on the same splits, the difference,
    and the paper's anchors (IForest and the per-dataset best of 14) when `anchors_csv` exists."""
    results = pd.DataFrame(report["results"])
    columns = ["aucroc", "iforest_aucroc", *(["pu_aucroc"] if "pu_aucroc" in results else [])]
    table = results.groupby("dataset")[columns].mean().mul(100).rename(columns={"aucroc": "pynomaly", "iforest_aucroc": "iforest", "pu_aucroc": "plain_pu"})
    table["difference"] = table["pynomaly"] - table["iforest"]
    if "plain_pu" in table:  # with labels, the published few-label baseline stands beside IForest
        table["minus_plain_pu"] = table["pynomaly"] - table["plain_pu"]
    if anchors_csv is not None and anchors_csv.exists():
        anchors = pd.read_csv(anchors_csv).set_index("dataset").apply(pd.to_numeric, errors="coerce")
        table = table.join(anchors["IForest"].rename("paper_iforest")).join(anchors.max(axis=1).rename("paper_best_of_14"))
    table.loc["MEAN"] = table.mean()
    return table.round(2)


def against_iforest(table: pd.DataFrame, column: str = "difference", baseline: str = "IForest") -> str:
    """Wins, losses and the worst loss against IForest (or, with `column="minus_plain_pu"`, the plain
    PU classifier): a mean alone hides the losses that sink a default."""
    difference = table.drop(index="MEAN")[column]
    worst = difference.idxmin()
    return (f"against {baseline}: mean {difference.mean():+.2f}, {int((difference > 0).sum())} wins, {int((difference < 0).sum())} losses, "
            f"worst {difference.min():+.2f} ({worst})")


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
