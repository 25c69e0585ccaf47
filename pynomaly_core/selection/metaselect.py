"""Label-free model selection learned from benchmark datasets (after MetaOD, Zhao et al. 2021).

A model is a detector with fixed hyper-parameters. A dataset is described by label-free
meta-features: its size and dimension, and how strongly a few diverse "landmark" detectors agree
with each other on it (pairwise Spearman correlations of their training scores, which tell local
from global and axis-aligned from correlated anomalies). `selection_kb.json` holds these
meta-features and every model's test AUCROC on the development datasets (three seeds each).

For a new dataset each model's AUCROC is predicted from the most similar development datasets,
and that prediction is shrunk towards the model's AUCROC over all of them, the more the farther
the dataset lies from its neighbours (`Prediction`). The label-free model is a rank ensemble of
IForest, weighing half, and the best-predicted others. With a few labels, a candidate replaces that
ensemble only where its gain, predicted by the neighbours and measured by the labelled anomalies,
is expected to outweigh the risk of a loss (`gain_utility`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from scipy.stats import norm, spearmanr
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ..detectors import registry
from ..detectors.ranks import percentile_ranks
from .consensus import OptunaSearch, best_trial_selection, labels_held_out
from .base import LABEL_GUIDED, Selection, ensemble_spec, fixed_params, label_guided_spec

LANDMARKS = ("iforest", "knn", "lof", "copod", "hbos", "ocsvm")
KNOWLEDGE_BASE = Path(__file__).with_name("selection_kb.json")
NEIGHBOUR_DATASETS = 5
# Every label-free ensemble keeps IForest, the best single detector on average in ADBench's own
# results (Han et al. 2022), as half its weight: a safe member bounds how far a wrong prediction can fall.
ANCHOR = "iforest"
SKETCH_ROWS = 256
LANDMARK_ROWS = 7000  # the ADBench protocol's training part: 70 % of at most 10,000 rows
# Covariance estimators' fits grow with the cube of the features: above this many they are not
# fitted, in the knowledge base (where they rank like a coin flip) or as candidates.
CUBIC = ("mcd", "sk_elliptic")
MAX_CUBIC_FEATURES = 128
# A default that loses hurts more than one that wins helps: in the fallback's fit and in the few-label choice.
LOSS_WEIGHT = 2
GAIN_CRITERION = "expected gain over the label-free ensemble (labelled anomalies' ROC-AUC, losses counted twice)"


def features_from_scores(training_scores: dict[str, np.ndarray], n_rows: int, n_features: int) -> np.ndarray:
    correlations = [spearmanr(training_scores[a], training_scores[b]).statistic for a, b in itertools.combinations(LANDMARKS, 2)]
    return np.nan_to_num(np.array([np.log(n_rows), np.log(n_features), *correlations]))


def meta_features(X: np.ndarray, seed: int) -> np.ndarray:
    """The landmarks' agreement on at most `LANDMARK_ROWS` rows (seeded): the knowledge base's training
    parts hold no more, and OCSVM's fit grows faster than the rows."""
    if len(X) > LANDMARK_ROWS:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), LANDMARK_ROWS, replace=False))]
    scores = {name: registry.get(name).build({}, 0.1, seed).fit(X).decision_scores_ for name in LANDMARKS}
    return features_from_scores(scores, *X.shape)


@lru_cache(maxsize=1)
def knowledge_base(path: Path = KNOWLEDGE_BASE) -> dict:
    return json.loads(path.read_text())


def models(kb: dict | None = None) -> dict[str, tuple[str, dict]]:
    """Every knowledge-base model by name: (registry detector, hyper-parameters)."""
    return {m["model"]: (m["detector"], m["params"]) for m in (kb or knowledge_base())["models"]}


def row_hashes(X: np.ndarray) -> np.ndarray:
    return pd.util.hash_pandas_object(pd.DataFrame(np.asarray(X, dtype=np.float64)), index=False).to_numpy()


def sketch(X: np.ndarray) -> list[int]:
    """The `SKETCH_ROWS` smallest distinct row hashes (a bottom-k sketch): enough to tell that two tables share rows."""
    return [int(h) for h in np.unique(row_hashes(X))[:SKETCH_ROWS]]


def shares_rows(X: np.ndarray, dataset_sketch: list[int]) -> bool:
    """Whether half the rows of a development dataset lie in X, or half of X's rows in it
    (WBC's rows are all in breastw, and a renamed file has the same rows)."""
    hashes = np.unique(row_hashes(X))
    known = np.array(dataset_sketch, dtype=np.uint64)
    if np.isin(known, hashes).mean() >= 0.5:
        return True
    # Every row of that dataset hashing below its sketch's largest is in the sketch.
    smallest = hashes[:SKETCH_ROWS]
    comparable = smallest[smallest <= known.max()]
    return len(comparable) > 0 and np.isin(comparable, known).mean() >= 0.5


def without_rows_of(X: np.ndarray, kb: dict | None = None) -> tuple[dict, list[str]]:
    """The knowledge base without every development dataset that shares rows with X, and their names."""
    kb = kb or knowledge_base()
    dropped = [name for name, info in kb["datasets"].items() if shares_rows(X, info["sketch"])]
    return without_datasets(kb, dropped), dropped


def without_datasets(kb: dict, names) -> dict:
    names = set(names)
    return {**kb, "datasets": {k: v for k, v in kb["datasets"].items() if k not in names},
            "entries": [e for e in kb["entries"] if e["dataset"] not in names]}


@dataclass(frozen=True)
class Neighbours:
    """The development entries nearest to a dataset: each model's AUCROC on them, their
    inverse-distance weights, and how far they are. A rank ensemble is predicted by the mean
    AUCROC of its members."""

    models: list[str]
    aucroc: np.ndarray  # entries x models
    weights: np.ndarray
    distance: float = 0.0  # mean standardised meta-feature distance to those entries

    def _of(self, members: list[str]) -> np.ndarray:
        return self.aucroc[:, [self.models.index(name) for name in members]].mean(axis=1)

    def predicted(self, members: list[str]) -> float:
        return float(np.average(self._of(members), weights=self.weights))

    def ranking(self) -> list[tuple[str, float]]:
        """Every model, best first, with its predicted AUCROC."""
        predicted = self.weights @ self.aucroc / self.weights.sum()
        return [(self.models[i], float(predicted[i])) for i in np.argsort(-predicted, kind="stable")]


def neighbours(features: np.ndarray, kb: dict | None = None) -> Neighbours:
    """The entries of the `NEIGHBOUR_DATASETS` development datasets nearest in standardised meta-feature space."""
    kb = kb or knowledge_base()
    entries = kb["entries"]
    known = np.array([e["features"] for e in entries])
    scaler = StandardScaler().fit(known)
    distance = np.linalg.norm(scaler.transform(known) - scaler.transform(np.asarray(features)[None, :]), axis=1)
    per_dataset = len(entries) / len({e["dataset"] for e in entries})
    nearest = np.argsort(distance, kind="stable")[: int(round(NEIGHBOUR_DATASETS * per_dataset))]
    names = [m["model"] for m in kb["models"]]
    aucroc = np.array([[entries[i]["aucroc"][name] for name in names] for i in nearest])
    # The weights stay explicit (not KNeighborsRegressor(weights="distance")): the few-label rule and
    # its replay read the entries' AUCROC and weights, and an exact match must not take all the weight.
    return Neighbours(names, aucroc, 1.0 / (distance[nearest] + 1e-6), float(distance[nearest].mean()))


def overall_aucroc(kb: dict) -> dict[str, float]:
    """Each model's AUCROC over every development dataset (mean over seeds, then datasets)."""
    frame = pd.DataFrame([{"dataset": e["dataset"], **e["aucroc"]} for e in kb["entries"]])
    return frame.groupby("dataset").mean().mean().to_dict()


@dataclass(frozen=True)
class Prediction:
    """Each model's predicted AUCROC: the neighbours' prediction shrunk towards its overall AUCROC
    with weight distance / (distance + `reach`), so a dataset far from every development dataset
    falls back on what is safe everywhere."""

    near: Neighbours
    overall: dict[str, float]
    reach: float

    @property
    def trust(self) -> float:
        """The neighbours' share of the prediction."""
        if np.isinf(self.reach):
            return 1.0
        return self.reach / (self.near.distance + self.reach) if self.reach > 0 else 0.0

    def ranking(self) -> list[tuple[str, float]]:
        blended = {name: self.trust * value + (1 - self.trust) * self.overall[name] for name, value in self.near.ranking()}
        return sorted(blended.items(), key=lambda item: -item[1])

    def ensemble(self, size: int, allowed=None) -> list[str]:
        """IForest and the `size - 1` best-predicted other models (among `allowed` ones)."""
        others = [name for name, _ in self.ranking() if name != ANCHOR and (allowed is None or name in allowed)]
        return [ANCHOR, *others[: size - 1]]


def anchored_weights(members: list[str]) -> list[float]:
    """IForest weighs as much as the other members together."""
    return [max(len(members) - 1, 1), *[1] * (len(members) - 1)]


def _utility(gains: np.ndarray) -> float:
    """Mean gain over IForest with losses counted twice: a default that loses hurts more than one that wins helps."""
    return float(np.mean(np.where(gains < 0, LOSS_WEIGHT * gains, gains)))


def left_out_neighbours(kb: dict):
    """Each entry with its neighbours and the overall figures, both from the other datasets."""
    for dataset in kb["datasets"]:
        rest = without_datasets(kb, [dataset])
        overall = overall_aucroc(rest)
        for e in (e for e in kb["entries"] if e["dataset"] == dataset):
            yield dataset, e, neighbours(np.array(e["features"]), rest), overall


def fitted_reach(kb: dict, size: int) -> float:
    """The `Prediction.reach` that serves the knowledge base's own datasets best, each predicted
    from the others (leave one dataset out). An ensemble's AUCROC is taken as its members' weighted mean.
    Candidates: no trust (0), quantiles of those datasets' neighbour distances, full trust (inf)."""
    rows = list(left_out_neighbours(kb))
    distances = [near.distance for _, _, near, _ in rows]
    candidates = [0.0, *np.quantile(distances, [0.1, 0.25, 0.5, 0.75, 0.9]), np.inf]
    utilities = []
    for reach in candidates:
        gains = {}
        for dataset, e, near, overall in rows:
            members = Prediction(near, overall, reach).ensemble(size)
            aucroc = np.average([e["aucroc"][m] for m in members], weights=anchored_weights(members))
            gains.setdefault(dataset, []).append(aucroc - e["aucroc"][ANCHOR])
        utilities.append(_utility(np.array([np.mean(g) for g in gains.values()])))
    return float(candidates[int(np.argmax(utilities))])


def predict(features: np.ndarray, kb: dict, size: int) -> Prediction:
    return Prediction(neighbours(features, kb), overall_aucroc(kb), fitted_reach(kb, size))


def difference_error(kb: dict, size: int) -> float:
    """The prior variance of a model's gain over the label-free ensemble: the mean squared error of
    its predicted gain on the knowledge base's entries, each predicted from the other datasets
    (leave one dataset out). The ensemble is the neighbours' (reach infinite, what `fitted_reach`
    chooses on the shipped knowledge base), its AUCROC its members' weighted mean, as `fitted_reach` takes it."""
    errors = []
    for _, e, near, overall in left_out_neighbours(kb):
        members = Prediction(near, overall, np.inf).ensemble(size)
        weights = anchored_weights(members)
        actual = np.average([e["aucroc"][m] for m in members], weights=weights)
        predicted = np.average([near.predicted([m]) for m in members], weights=weights)
        errors += [(near.predicted([m]) - predicted) - (e["aucroc"][m] - actual) for m in near.models]
    return float(np.mean(np.square(errors)))


def label_noise(scores: np.ndarray, reference_ranks: np.ndarray) -> float:
    """The variance one labelled anomaly adds to a candidate's measured gain over the label-free
    ensemble, taken label-free: how much their percentile ranks differ from row to row (two
    rankings that agree on every row gain nothing whichever row is labelled)."""
    # Floored: a candidate that ranks every row as the ensemble does differs by ties alone.
    return max(float(np.var(percentile_ranks(np.sort(scores), scores, "rank") - reference_ranks)), 1e-4)


def gain_utility(prior_gain: float, prior_variance: float, measured_gain: float, n_labelled: int, noise: float,
                 loss_weight: float = LOSS_WEIGHT) -> float:
    """Expected utility of choosing a candidate over the label-free ensemble, losses counted `loss_weight` times.

    Its gain d in AUCROC is predicted as `prior_gain` with variance `prior_variance` and measured
    by `n_labelled` labelled anomalies as `measured_gain` with variance `noise` / n: the posterior
    is normal, and E[u(d)] = E[d] + (loss_weight - 1) E[min(d, 0)]. A candidate whose gain is no
    surer than its spread of possible losses scores below the ensemble's 0.
    """
    variance = 1 / (1 / prior_variance + n_labelled / noise)
    mean = variance * (prior_gain / prior_variance + n_labelled * measured_gain / noise)
    sd = np.sqrt(variance)
    expected_loss = mean * norm.cdf(-mean / sd) - sd * norm.pdf(mean / sd)
    return float(mean + (loss_weight - 1) * expected_loss)


def fit_seconds(kb: dict, model: str, n_rows: int, n_features: int) -> float:
    """A model's predicted fit time on n_rows x n_features: log-linear in both, fitted on the
    knowledge base's measured fits of that model."""
    measured = [(e["rows"], e["n_features"], e["fit_seconds"][model]) for e in kb["entries"] if model in e["fit_seconds"]]
    if len(measured) < 3:
        return 0.0
    rows, features, seconds = map(np.array, zip(*measured))
    design = np.column_stack([np.ones(len(rows)), np.log(rows), np.log(features)])
    coef, *_ = np.linalg.lstsq(design, np.log(np.maximum(seconds, 1e-3)), rcond=None)
    return float(np.exp(coef @ [1.0, np.log(n_rows), np.log(n_features)]))


def affordable_models(kb: dict, shape: tuple[int, int], timeout: float | None) -> tuple[set[str], dict[str, str]]:
    """The knowledge-base models worth fitting on data of this shape, and why the others are not."""
    skipped = {}
    for name, (detector, _) in models(kb).items():
        if detector in CUBIC and shape[1] > MAX_CUBIC_FEATURES:
            skipped[name] = f"its fit grows with the cube of the features ({shape[1]} > {MAX_CUBIC_FEATURES})"
        elif timeout is not None and name != ANCHOR and (seconds := fit_seconds(kb, name, *shape)) > timeout:
            skipped[name] = f"predicted fit {seconds:.0f} s > train.timeout {timeout:g} s"
    return set(models(kb)) - set(skipped), skipped


class MetaSelector(OptunaSearch):
    """`train.strategy: meta`. Without labels: the rank ensemble of IForest (half the weight) and
    the `train.ensemble_size - 1` best-predicted models. With labels: an Optuna grid over the top
    `meta_candidates` models, that ensemble and that ensemble guided by a classifier of the
    labelled anomalies, each candidate judged by the expected utility of its gain over that ensemble.
    Models whose predicted fit time exceeds `train.timeout` are skipped, and said so."""

    uses_knowledge_base = True

    def __init__(self, *args, knowledge_base: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.kb = knowledge_base

    def choose(self, X, y):
        kb = self.kb or knowledge_base()
        catalogue = models(kb)
        affordable, skipped = affordable_models(kb, X.shape, self.train.timeout)
        prediction = predict(meta_features(X, self.seed), kb, self.train.ensemble_size)
        top = prediction.ensemble(self.train.ensemble_size, affordable)
        member_names, member_params, weights = [catalogue[name][0] for name in top], [catalogue[name][1] for name in top], anchored_weights(top)
        ensemble = ensemble_spec(member_names, member_params, weights)
        if y is None:
            predicted = dict(prediction.ranking())
            selection = Selection(ensemble.name, ensemble.search_space(None), float(np.average([predicted[m] for m in top], weights=weights)),
                                  "meta_predicted_aucroc", skipped=skipped)
            return selection, ensemble
        near = prediction.near
        # Few labels cannot tune hyper-parameters without over-fitting: the knowledge base's models only,
        # the best-predicted first, as many as leave room for the two ensembles within n_trials.
        ranked = [name for name, _ in prediction.ranking() if name in affordable]
        room = max(self.train.n_trials - 2, 0)
        candidates = {name: fixed_params(registry.get(catalogue[name][0]), catalogue[name][1]) for name in ranked[: min(self.train.meta_candidates or room, room)]}
        models_of = {name: [name] for name in candidates}
        candidates[ensemble.name], models_of[ensemble.name] = ensemble, top
        # The labels join through that ensemble guided by a classifier of the labelled anomalies.
        # Cross-validated, so it needs two labelled anomalies; the knowledge base is label-free,
        # so its prediction is the ensemble's.
        if labels_held_out(y):
            candidates[LABEL_GUIDED], models_of[LABEL_GUIDED] = label_guided_spec(member_names, member_params, weights), top
        prior, fitted = None, {}
        if self.train.metric == "roc_auc":  # the predictions are ROC-AUCs
            prior = self.gain_over_ensemble(X, y, kb, near, ensemble, candidates, models_of, fitted)
        # Every candidate is fitted once: a pruner would only drop some on their raw score.
        study, _ = self.run(X, y, candidates, n_trials=len(candidates), pruning=False,
                            sampler=optuna.samplers.GridSampler({"detector": list(candidates)}, seed=self.seed), prior=prior,
                            training_scores=fitted)
        criterion = self.train.metric if prior is None else GAIN_CRITERION
        selection = dataclasses.replace(best_trial_selection(study, candidates, criterion, self.storage()), skipped=skipped)
        return selection, candidates[selection.detector]

    def gain_over_ensemble(self, X, y, kb, near, ensemble, candidates, models_of, fitted):
        """The few-label objective: each candidate's expected utility (`gain_utility`) of replacing
        the label-free ensemble, which scores 0. Its gain is predicted by the neighbours, measured
        by the ROC-AUC of the labelled anomalies; a candidate fitted once is compared with the
        ensemble anomaly by anomaly (paired), the cross-validated guided one is not (its noise is
        one labelled anomaly's rank variance on the knowledge base, and it has no prediction of its own)."""
        reference = ensemble.build(ensemble.search_space(None), self.train.contamination, self.seed).fit(X).decision_scores_
        reference_ranks, reference_measured = percentile_ranks(np.sort(reference), reference, "rank"), roc_auc_score(y, reference)
        reference_predicted = near.predicted(models_of[ensemble.name])
        n_labelled, prior_variance = int(np.sum(y == 1)), difference_error(kb, self.train.ensemble_size)
        rank_variance = float(np.mean([e["anomaly_rank_variance"] for e in kb["entries"]]))

        def prior(name: str, measured: float) -> float:
            if name == ensemble.name:
                return 0.0
            scores = fitted.get(id(candidates[name]))
            noise = rank_variance if scores is None else label_noise(scores, reference_ranks)
            return gain_utility(near.predicted(models_of[name]) - reference_predicted, prior_variance, measured - reference_measured, n_labelled, noise)

        return prior

