"""Replay few-label meta-selection rules on cached scores, leave one dataset out.

For every dataset and seed, `pynomaly bench --label-fraction F`'s labels are revealed
(`bench.reveal_labels`) and every candidate of the few-label grid is measured as
`MetaSelector.choose` measures it: a knowledge-base model and the label-free ensemble by the
ROC-AUC of the labelled anomalies among their training scores, the guided ensemble
(`rank_ensemble+pu_logistic`) cross-validated on the labels. Each candidate gets the shipped
objective (`metaselect.gain_utility` of its gain over the ensemble) and the one before it (its
ROC-AUC shrunk to its neighbour prediction, k = k̄·s̄/s). The knowledge base is the shipped one without every dataset sharing rows with the one
under test, as `pynomaly bench --lodo` hands it. Members' scores come from the cache of
`benchmarks/build_selection_kb.py --scores CACHE`; in the guided ensemble's folds the members are
not refitted (their cached training scores are ranked among the fold's fit rows), the classifier is.

Each candidate's test AUCROC is recorded beside its figures, so a selection rule is a function
of that table (`RULES`) and costs nothing to replay.

Run:  .venv/bin/python benchmarks/fewlabel_replay.py --scores CACHE --test-data DIR [DIR ...] --out table.csv
      .venv/bin/python benchmarks/fewlabel_replay.py --table table.csv [...]   (summarise again)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from build_selection_kb import SEEDS
from pynomaly_core.selection import metaselect
from pynomaly_core.selection.bench import adbench_split, load_dataset, reveal_labels
from pynomaly_core.detectors.ensemble import rank_average
from pynomaly_core.detectors.sklearn import PositiveUnlabelledLogistic
from pynomaly_core.selection.base import LABEL_GUIDED

ENSEMBLE = "ensemble"
CV_FOLDS = 3  # train.cv_folds


def percentile_of(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(reference), scores, side="right") / len(reference)


def guided_scores(scores: dict, members, weights, X_train, known, X_test, seed):
    """The guided ensemble: cross-validated ROC-AUC of the labelled anomalies, and its test scores."""
    fitted = [(m, w) for m, w in zip(members, weights) if f"train:{m}" in scores]
    values = []
    folds = StratifiedKFold(min(CV_FOLDS, int(known.sum())), shuffle=True, random_state=seed).split(X_train, known)
    for fit_rows, held_out in folds:
        ranks = [percentile_of(scores[f"train:{m}"][fit_rows], scores[f"train:{m}"][held_out]) for m, _ in fitted]
        classifier = PositiveUnlabelledLogistic().fit(X_train[fit_rows], known[fit_rows])
        ranks.append(percentile_of(classifier.decision_scores_, classifier.decision_function(X_train[held_out])))
        values.append(roc_auc_score(known[held_out], np.average(ranks, axis=0, weights=[w for _, w in fitted] + [sum(weights)])))
    classifier = PositiveUnlabelledLogistic().fit(X_train, known)
    ranks = [percentile_of(scores[f"train:{m}"], scores[f"test:{m}"]) for m, _ in fitted]
    ranks.append(percentile_of(classifier.decision_scores_, classifier.decision_function(X_test)))
    test = np.average(ranks, axis=0, weights=[w for _, w in fitted] + [sum(weights)])
    return float(np.mean(values)), test


def ensemble_test(scores, members, weights):
    fitted = [(m, w) for m, w in zip(members, weights) if f"train:{m}" in scores]
    train = rank_average([np.sort(scores[f"train:{m}"]) for m, _ in fitted], [scores[f"train:{m}"] for m, _ in fitted], [w for _, w in fitted])
    test = rank_average([np.sort(scores[f"train:{m}"]) for m, _ in fitted], [scores[f"test:{m}"] for m, _ in fitted], [w for _, w in fitted])
    return train, test


def spread(near: metaselect.Neighbours, members: list[str]) -> float:
    """The rule before: the weighted variance of the candidate's AUCROC across the neighbour datasets."""
    aucroc = near.aucroc[:, [near.models.index(m) for m in members]].mean(axis=1)
    return float(np.average((aucroc - np.average(aucroc, weights=near.weights)) ** 2, weights=near.weights))


def calibration_before(kb: dict) -> tuple[float, float]:
    """The rule before: k̄ (one label's rank variance over the mean squared prediction error) and s̄ (the mean spread)."""
    errors, rank_variances, spreads = [], [], []
    for _, e, near, _ in metaselect.left_out_neighbours(kb):
        errors += [predicted - e["aucroc"][name] for name, predicted in near.ranking()]
        rank_variances.append(e["anomaly_rank_variance"])
        spreads += [spread(near, [name]) for name in near.models]
    return float(np.mean(rank_variances) / np.mean(np.square(errors))), float(np.mean(spreads))


def candidate_rows(path: Path, scores_dir: Path, fraction: float, size: int = 3) -> list[dict]:
    X, y = load_dataset(path)
    kb, _ = metaselect.without_rows_of(X)
    k_bar, s_bar = calibration_before(kb)
    rank_variance = float(np.mean([e["anomaly_rank_variance"] for e in kb["entries"]]))
    tau2_diff = metaselect.difference_error(kb, size)
    rows = []
    for seed in SEEDS:
        scores = dict(np.load(scores_dir / f"{path.stem}_{seed}.npz"))
        X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
        if not np.array_equal(y_train, scores["y_train"]):
            raise SystemExit(f"{path.stem}, seed {seed}: the score cache's split differs from the benchmark's; rebuild the cache")
        known = reveal_labels(y_train, fraction, seed)
        n = int(known.sum())
        landmarks = {name: scores[f"train:{name}"] for name in metaselect.LANDMARKS}
        features = metaselect.features_from_scores(landmarks, len(y_train), X.shape[1])
        prediction = metaselect.predict(features, kb, size)
        near = prediction.near
        affordable, _ = metaselect.affordable_models(kb, X_train.shape, None)
        top = prediction.ensemble(size, affordable)
        weights = metaselect.anchored_weights(top)
        base = {"dataset": path.stem, "seed": seed, "n_labels": n, "n_anomalies": int(y_train.sum()), "n_features": X.shape[1],
                "rank_variance": rank_variance, "tau2_diff": tau2_diff, "ensemble": "+".join(top)}

        ens_train, _ = ensemble_test(scores, top, weights)
        ens_ranks = rankdata(ens_train) / len(ens_train)
        ens_measured = roc_auc_score(known, ens_train)
        top_rows = ens_ranks > 0.9  # train.contamination's share, by the label-free ensemble

        def record(name, members, measured, test_scores, kind, train_scores=None):
            diff = None if train_scores is None else rankdata(train_scores) / len(train_scores) - ens_ranks
            predicted = near.predicted(members)
            k = k_bar * s_bar / max(spread(near, members), 1e-6)
            noise = rank_variance if train_scores is None else metaselect.label_noise(train_scores, ens_ranks)
            gain = 0.0 if kind == "ensemble" else metaselect.gain_utility(
                predicted - near.predicted(top), tau2_diff, measured - ens_measured, n, noise)
            rows.append({**base, "candidate": name, "kind": kind, "predicted": predicted, "k": k,
                         "measured": measured, "posterior": (k * predicted + n * measured) / (k + n), "gain_utility": gain,
                         "test": float(roc_auc_score(y_test, test_scores)),
                         "diff_var_anomalies": np.nan if diff is None else float(np.var(diff[y_train == 1])),
                         "diff_var_top": np.nan if diff is None else float(np.var(diff[top_rows])),
                         "noise": noise})

        for name in (name for name, _ in prediction.ranking() if name in affordable):
            if f"train:{name}" not in scores:  # could not fit: the grid's trial fails
                continue
            record(name, [name], roc_auc_score(known, scores[f"train:{name}"]), scores[f"test:{name}"], "model", scores[f"train:{name}"])
        train, test = ensemble_test(scores, top, weights)
        record(ENSEMBLE, top, roc_auc_score(known, train), test, "ensemble", train)
        if n >= 2:
            measured, test = guided_scores(scores, top, weights, X_train, known, X_test, seed)
            record(LABEL_GUIDED, top, measured, test, "guided")
    return rows


def gain_over_ensemble(g: pd.DataFrame, noise: pd.Series, loss_weight: float = metaselect.LOSS_WEIGHT) -> pd.Series:
    """`metaselect.gain_utility` of every candidate of one dataset and seed, with another noise or loss weight."""
    e = g[g.kind == "ensemble"].iloc[0]
    return pd.Series([0.0 if r.kind == "ensemble" else metaselect.gain_utility(
        r.predicted - e.predicted, r.tau2_diff, r.measured - e.measured, r.n_labels, max(v, 1e-4), loss_weight)
        for (_, r), v in zip(g.iterrows(), noise)], index=g.index)


def paired_noise(g: pd.DataFrame, column: str) -> pd.Series:
    return g[column].where(g.kind != "guided", g.rank_variance)


RULES = {
    "label-free ensemble": lambda g: g.kind == "ensemble",
    "before: shrunk ROC-AUC, k = k̄·s̄/s": lambda g: g.posterior,
    "before, without the guided candidate": lambda g: g.posterior.where(g.kind != "guided", -np.inf),
    "now: expected gain over the ensemble (shipped)": lambda g: g.gain_utility,
    "now, risk-neutral (losses once)": lambda g: gain_over_ensemble(g, g.noise, 1.0),
    "now, noise from the top 10 % rows": lambda g: gain_over_ensemble(g, paired_noise(g, "diff_var_top")),
    "now, noise from every anomaly (hindsight)": lambda g: gain_over_ensemble(g, paired_noise(g, "diff_var_anomalies")),
    "best candidate (hindsight)": lambda g: g.test,
}


def summary(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each rule's test AUCROC (%) per dataset (mean of seeds), and its mean, gain over label-free and over IForest, wins, losses, worst."""
    rows = []
    for (dataset, seed), g in table.groupby(["dataset", "seed"]):
        row = {"dataset": dataset, "seed": seed, "iforest": g[g.candidate == "iforest"].test.iloc[0]}
        for rule, value in RULES.items():
            row[rule] = g.test[pd.Series(value(g), index=g.index).astype(float).idxmax()]
        rows.append(row)
    per_dataset = pd.DataFrame(rows).groupby("dataset").mean().drop(columns="seed") * 100
    gain = per_dataset.sub(per_dataset["label-free ensemble"], axis=0)
    overall = pd.DataFrame({
        "mean": per_dataset.mean(), "vs label-free": gain.mean(), "vs iforest": per_dataset.sub(per_dataset["iforest"], axis=0).mean(),
        "wins": (gain > 0.005).sum(), "losses": (gain < -0.005).sum(), "worst": gain.min(), "worst dataset": gain.idxmin(),
    })
    return gain, overall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scores", type=Path)
    parser.add_argument("--test-data", type=Path, nargs="+")
    parser.add_argument("--label-fraction", type=float, default=0.01)
    parser.add_argument("--out", type=Path, help="every candidate of every dataset and seed (CSV)")
    parser.add_argument("--table", type=Path, nargs="*", help="summarise tables written before instead of replaying")
    args = parser.parse_args()
    if args.table:
        gain, overall = summary(pd.concat([pd.read_csv(path) for path in args.table]))
        pd.set_option("display.width", 250)
        print(gain.round(2).to_string())
        print(overall.round(2).to_string())
        return
    if not (args.scores and args.test_data and args.out):
        parser.error("--scores, --test-data and --out are needed to replay (or --table to summarise)")
    rows = []
    for path in sorted((p for folder in args.test_data for p in folder.glob("*.npz")), key=lambda p: p.stem.lower()):
        if not (args.scores / f"{path.stem}_{SEEDS[-1]}.npz").exists():
            print("no cached scores:", path.stem, flush=True)
            continue
        rows += candidate_rows(path, args.scores, args.label_fraction)
        print(path.stem, flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out, index=False)
    gain, overall = summary(table)
    pd.set_option("display.width", 250)
    print(gain.round(2).to_string())
    print(overall.round(2).to_string())


if __name__ == "__main__":
    main()
