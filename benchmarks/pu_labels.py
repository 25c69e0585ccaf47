"""Few-label learners on `pynomaly bench`'s own splits: the plain positive-unlabelled classifier
(ADBench's CatBoost setting), HistGradientBoosting beside it, and the variants of issue 25.

For every dataset and seed: `bench.adbench_split`, the labelled anomalies of
`bench.reveal_labels` (a fraction, or `--labels N` as a count), and five label-free detectors
(IForest, KNN, LOF, HBOS, ECOD, PyOD defaults) fitted on the training part. Their scores are
cached per dataset and seed (`--cache`), and so is every learner's test score, so a combination
rule is replayed without refitting. Dismissed rows are simulated as an analyst's first review:
the normal rows among IForest's 20 highest-scored training rows (fixed before measuring).

Variants (`VARIANTS`): the learner (catboost, hgb), its features (raw X, or X plus the label-free
scores: XGBOD's idea), class weights, and dismissed rows weighted as known normals.

Run:  nice -n 10 python benchmarks/pu_labels.py DIR [DIR ...] --cache /tmp/pu_cache --out table.csv
      python benchmarks/pu_labels.py --table table.csv   (summarise again)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pynomaly_core.selection.bench import adbench_split, load_dataset, reveal_labels
from pynomaly_core.detectors import registry
from pynomaly_core.detectors import pu

SEEDS = (1, 2, 3)
LABEL_FREE = ("iforest", "knn", "lof", "hbos", "ecod")
REVIEWED = 20  # rows of the simulated first review
VARIANTS = {
    # name: (learner, label-free scores as features, class weights, dismissed rows as known normals,
    #        reliable negatives only: unlabelled rows in IForest's top RELIABLE_TOP share are left out of the fit)
    "catboost": ("catboost", False, False, False, False),
    "hgb": ("hgb", False, False, False, False),
    "catboost+scores": ("catboost", True, False, False, False),
    "catboost+dismissed": ("catboost", False, False, True, False),
    "catboost+scores+dismissed": ("catboost", True, False, True, False),
    "catboost+balanced": ("catboost", False, True, False, False),
    "catboost+reliable": ("catboost", False, False, False, True),
}
# Two-step PU (Liu et al., ICDM 2003: "reliable negatives"): the label-free detector's top rows likely
# hide unlabelled anomalies, so they are not fitted as normals. The share is train.contamination's default.
RELIABLE_TOP = 0.1


def label_free(name: str, X_train, X_test, seed: int, cache: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Training and test scores of the label-free detectors (columns in LABEL_FREE order), and the fit seconds."""
    path = cache / f"{name}-{seed}-labelfree.npz"
    if path.exists():
        with np.load(path) as stored:
            return stored["train"], stored["test"], float(stored["seconds"])
    started = time.perf_counter()
    train, test = [], []
    for detector in LABEL_FREE:
        model = registry.get(detector).build({}, 0.1, seed).fit(X_train)
        train.append(model.decision_scores_)
        test.append(model.decision_function(X_test))
    seconds = time.perf_counter() - started
    np.savez(path, train=np.column_stack(train), test=np.column_stack(test), seconds=seconds)
    return np.column_stack(train), np.column_stack(test), seconds


def dismissed_rows(y_train, known, iforest_train) -> np.ndarray:
    """The analyst's first review: the normal rows among IForest's REVIEWED highest training scores."""
    top = np.argsort(-iforest_train, kind="stable")[:REVIEWED]
    return top[(y_train[top] == 0) & (known[top] == 0)]


def run(dirs: list[Path], labels: str, cache: Path, variants: list[str], only: list[str] | None = None, seeds=SEEDS,
        progress=print) -> pd.DataFrame:
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for directory in dirs:
        for path in sorted(directory.glob("*.npz"), key=lambda p: p.stem.lower()):
            if only and path.stem not in only:
                continue
            X, y = load_dataset(path)
            for seed in seeds:
                X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
                known = reveal(y_train, labels, seed)
                scores_train, scores_test, lf_seconds = label_free(path.stem, X_train, X_test, seed, cache)
                dismissed = dismissed_rows(y_train, known, scores_train[:, 0])
                row = {"group": directory.name, "dataset": path.stem, "seed": seed, "labels": labels,
                       "n_anomalies": int(known.sum()), "n_dismissed": len(dismissed), "labelfree_seconds": round(lf_seconds, 2)}
                for i, detector in enumerate(LABEL_FREE):
                    row[detector] = roc_auc_score(y_test, scores_test[:, i])
                for variant in variants:
                    _, test, seconds = learner_scores(variant, path.stem, seed, labels, cache, X_train, X_test, known, dismissed,
                                                   scores_train, scores_test)
                    row[variant] = roc_auc_score(y_test, test)
                    row[f"{variant}_seconds"] = seconds
                rows.append(row)
                progress(f"{directory.name}/{path.stem} seed {seed}: {int(known.sum())} labelled, "
                         + ", ".join(f"{v} {row[v]:.4f}" for v in ("iforest", *variants)))
    return pd.DataFrame(rows)


def reveal(y_train, labels: str, seed: int) -> np.ndarray:
    """`1%` reveals that share of the training anomalies (`pynomaly bench --label-fraction`); `5` that many."""
    if labels.endswith("%"):
        return reveal_labels(y_train, float(labels[:-1]) / 100, seed)
    return reveal_labels(y_train, 0.0, seed, count=int(labels))


def learner_scores(variant, name, seed, labels, cache, X_train, X_test, known, dismissed, scores_train, scores_test):
    """One variant's training and test scores (cached) and its fit seconds."""
    path = cache / f"{name}-{seed}-{labels.replace('%', 'pct')}-{variant}.npz"
    if path.exists():
        with np.load(path) as stored:
            return stored["train"], stored["test"], float(stored["seconds"])
    learner, with_scores, balanced, with_dismissed, reliable = VARIANTS[variant]
    y = known.copy()
    if with_dismissed:
        y[dismissed] = pu.KNOWN_NORMAL
    fitted = np.ones(len(y), dtype=bool)
    if reliable:
        top = scores_train[:, 0] >= np.quantile(scores_train[:, 0], 1 - RELIABLE_TOP)
        fitted = ~top | (y == 1)
    started = time.perf_counter()
    params = {"learner": learner, "class_weight": "balanced" if balanced else None}
    model = pu.PositiveUnlabelledBoosting(model="pu_boost", params=params, random_state=seed)
    train_features = np.column_stack([X_train, scores_train]) if with_scores else X_train
    model.fit(train_features[fitted], y[fitted])
    train = model.decision_scores_ if fitted.all() else model.decision_function(train_features)
    test = model.decision_function(np.column_stack([X_test, scores_test]) if with_scores else X_test)
    seconds = time.perf_counter() - started
    np.savez(path, train=train, test=test, seconds=seconds)
    return train, test, seconds


def percentile(train: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """As `RankEnsemble` ranks a member: the share of its training scores at or below each score."""
    return np.searchsorted(np.sort(train), scores, side="right") / len(train)


def with_blends(table: pd.DataFrame, dirs: list[Path], cache: Path, variant: str, dismissed: bool = False) -> pd.DataFrame:
    """Adds `blend_k{k}`: the rank blend of IForest and `variant`, the learner weighing n / (n + k),
    n the labelled anomalies (plus a fifth of the dismissed rows with `dismissed`), for each k of K_GRID."""
    paths = {p.stem: p for d in dirs for p in d.glob("*.npz")}
    table = table.copy()
    for i, row in table.iterrows():
        X, y = load_dataset(paths[row["dataset"]])
        _, _, _, y_test = adbench_split(X, y, int(row["seed"]))
        with np.load(cache / f"{row['dataset']}-{row['seed']}-labelfree.npz") as stored:
            iforest = percentile(stored["train"][:, 0], stored["test"][:, 0])
        with np.load(cache / f"{row['dataset']}-{row['seed']}-{row['labels'].replace('%', 'pct')}-{variant}.npz") as stored:
            learner = percentile(stored["train"], stored["test"])
        n = row["n_anomalies"] + (row["n_dismissed"] / pu.DISMISSED_WEIGHT if dismissed else 0)
        for k in K_GRID:
            weight = 1.0 if k == 0 else n / (n + k)
            table.loc[i, f"blend_k{k:g}"] = roc_auc_score(y_test, (1 - weight) * iforest + weight * learner)
    return table


K_GRID = (0, 0.25, 0.5, 1, 2, 4, 8, 16)
# Label-free rules checked against IForest alone: member weights over LABEL_FREE's columns.
LABEL_FREE_RULES = {
    "iforest": (1, 0, 0, 0, 0),
    "rank average of the five": (1, 1, 1, 1, 1),
    "iforest at half weight, knn, lof": (2, 1, 1, 0, 0),
    "iforest and knn": (1, 1, 0, 0, 0),
}


def label_free_rules(dirs: list[Path], cache: Path) -> pd.DataFrame:
    """Each label-free rule's test AUCROC per dataset and seed, from the cached scores."""
    rows = []
    for directory in dirs:
        for path in sorted(directory.glob("*.npz"), key=lambda p: p.stem.lower()):
            X, y = load_dataset(path)
            for seed in SEEDS:
                y_test = adbench_split(X, y, seed)[3]
                with np.load(cache / f"{path.stem}-{seed}-labelfree.npz") as stored:
                    ranks = np.array([percentile(stored["train"][:, i], stored["test"][:, i]) for i in range(len(LABEL_FREE))])
                rows.append({"group": directory.name, "dataset": path.stem, "seed": seed,
                             **{rule: roc_auc_score(y_test, np.average(ranks, axis=0, weights=w)) for rule, w in LABEL_FREE_RULES.items()}})
    return pd.DataFrame(rows)


def lodo_blend(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """For each dataset, k fitted on every other dataset (of both groups): the k whose blend gains
    most over `baseline`, losses counted twice (the project's criterion for a default)."""
    means = table.groupby(["group", "dataset"])[[baseline, *[f"blend_k{k:g}" for k in K_GRID]]].mean()
    rows = []
    for key in means.index:
        others = means.drop(index=key)
        gain = others[[f"blend_k{k:g}" for k in K_GRID]].sub(others[baseline], axis=0)
        utility = (gain + gain.clip(upper=0)).mean()
        best = utility.idxmax()
        rows.append({"group": key[0], "dataset": key[1], "k": best.removeprefix("blend_k"), "blend_lodo": means.loc[key, best]})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, columns: list[str], baseline: str) -> pd.DataFrame:
    """Per group: mean AUCROC (%) of each column (seeds, then datasets), the difference to `baseline`, its worst dataset."""
    out = []
    for group, part in table.groupby("group"):
        means = part.groupby("dataset")[columns].mean().mul(100)
        for column in columns:
            difference = means[column] - means[baseline]
            out.append({"group": group, "method": column, "mean": means[column].mean(), f"minus {baseline}": difference.mean(),
                        "wins": int((difference > 0).sum()), "losses": int((difference < 0).sum()),
                        "worst": difference.min(), "worst dataset": difference.idxmin(), "spread": difference.std()})
    return pd.DataFrame(out).round(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path)
    parser.add_argument("--labels", default="1%", help="'1%%' (a share of the training anomalies) or a count such as 5")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--datasets", nargs="+", help="only these datasets (by file name without .npz)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pu_cache")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--table", type=Path, nargs="*", help="summarise stored tables instead of running")
    parser.add_argument("--blend", choices=list(VARIANTS), help="replay the rank blend of IForest and this learner (k fitted leave-one-dataset-out)")
    parser.add_argument("--label-free", action="store_true", help="compare label-free rules with IForest from the cached scores")
    parser.add_argument("--dismissed", action="store_true", help="--blend: the simulated dismissed rows count in the rule")
    args = parser.parse_args()
    if args.label_free:
        rules = label_free_rules(args.dirs, args.cache)
        with pd.option_context("display.width", 250, "display.max_columns", 30):
            print(summary(rules, list(LABEL_FREE_RULES), "iforest").to_string(index=False))
        return
    if args.table:
        table = pd.concat([pd.read_csv(path, dtype={"labels": str}) for path in args.table], ignore_index=True)
    else:
        table = run(args.dirs, args.labels, args.cache, args.variants, args.datasets, args.seeds)
        if args.out:
            table.to_csv(args.out, index=False)
    columns = [c for c in ("iforest", *VARIANTS) if c in table.columns]
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 200):
        print(summary(table, columns, "catboost" if "catboost" in table.columns else "iforest").to_string(index=False))
        seconds = [c for c in table.columns if c.endswith("_seconds")]
        print("fit seconds (sum over datasets and seeds):", table.groupby("group")[seconds].sum().round(0).to_dict())
        if args.blend:
            table = with_blends(table, args.dirs, args.cache, args.blend, args.dismissed)
            print(summary(table, ["iforest", "catboost", *[f"blend_k{k:g}" for k in K_GRID]], "catboost").to_string(index=False))
            lodo = lodo_blend(table, "catboost")
            learners = list(dict.fromkeys(["iforest", "catboost", args.blend]))
            per_dataset = table.groupby(["group", "dataset"])[learners].mean().reset_index().merge(lodo)
            per_dataset[[*learners, "blend_lodo"]] *= 100
            per_dataset["blend - catboost"] = per_dataset["blend_lodo"] - per_dataset["catboost"]
            per_dataset["blend - iforest"] = per_dataset["blend_lodo"] - per_dataset["iforest"]
            print(per_dataset.round(2).to_string(index=False))
            print(per_dataset.groupby("group")[[*learners, "blend_lodo", "blend - catboost", "blend - iforest"]]
                  .agg(["mean", "min"]).round(2).to_string())


if __name__ == "__main__":
    main()
