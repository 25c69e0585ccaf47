"""Label-free model selection learned from benchmark datasets (after MetaOD, Zhao et al. 2021).

A model is a detector with fixed hyper-parameters. A dataset is described by label-free
meta-features: how strongly a few diverse "landmark" detectors agree with each other on it
(pairwise Spearman correlations of their training scores, which tell local from global and
axis-aligned from correlated anomalies) and its size. `selection_kb.json` holds these
meta-features and every model's test AUCROC for the ADBench development datasets (three seeds
each). For a new dataset, the models are ranked by their distance-weighted mean AUCROC on the
most similar development datasets. With a few labels, each prediction is refined by the labelled
anomalies, trusted the more the less that model's AUCROC spreads across those datasets.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from .detectors import registry

LANDMARKS = ("iforest", "knn", "lof", "copod", "hbos", "ocsvm")
KNOWLEDGE_BASE = Path(__file__).with_name("selection_kb.json")
NEIGHBOUR_DATASETS = 5


def model_name(detector: str, params: dict) -> str:
    """A model's name in the knowledge base and in a study: `knn(n_neighbors=20)`, or `knn` for the defaults."""
    return detector if not params else f"{detector}({', '.join(f'{k}={v}' for k, v in params.items())})"


def features_from_scores(training_scores: dict[str, np.ndarray], n_rows: int) -> np.ndarray:
    correlations = [spearmanr(training_scores[a], training_scores[b]).statistic for a, b in itertools.combinations(LANDMARKS, 2)]
    return np.nan_to_num(np.array([np.log(n_rows), *correlations]))


def meta_features(X: np.ndarray, seed: int) -> np.ndarray:
    scores = {name: registry.get(name).build({}, 0.1, seed).fit(X).decision_scores_ for name in LANDMARKS}
    return features_from_scores(scores, len(X))


@lru_cache(maxsize=1)
def knowledge_base(path: Path = KNOWLEDGE_BASE) -> dict:
    return json.loads(path.read_text())


def models(kb: dict | None = None) -> dict[str, tuple[str, dict]]:
    """Every knowledge-base model by name: (registry detector, hyper-parameters)."""
    return {m["model"]: (m["detector"], m["params"]) for m in (kb or knowledge_base())["models"]}


@dataclass(frozen=True)
class Neighbours:
    """The development entries nearest to a dataset: each model's AUCROC on them, and their
    inverse-distance weights. A rank ensemble is predicted by the mean AUCROC of its members."""

    models: list[str]
    aucroc: np.ndarray  # entries x models
    weights: np.ndarray

    def _of(self, members: list[str]) -> np.ndarray:
        return self.aucroc[:, [self.models.index(name) for name in members]].mean(axis=1)

    def predicted(self, members: list[str]) -> float:
        return float(np.average(self._of(members), weights=self.weights))

    def spread(self, members: list[str]) -> float:
        """The weighted variance of that AUCROC across the neighbours: how much to trust the prediction."""
        aucroc = self._of(members)
        return float(np.average((aucroc - np.average(aucroc, weights=self.weights)) ** 2, weights=self.weights))

    def ranking(self) -> list[tuple[str, float]]:
        """Every model, best first, with its predicted AUCROC."""
        predicted = self.weights @ self.aucroc / self.weights.sum()
        return [(self.models[i], float(predicted[i])) for i in np.argsort(-predicted, kind="stable")]


def neighbours(features: np.ndarray, exclude_datasets: tuple[str, ...] = (), kb: dict | None = None) -> Neighbours:
    """The entries of the `NEIGHBOUR_DATASETS` development datasets nearest in standardised meta-feature space."""
    kb = kb or knowledge_base()
    entries = [e for e in kb["entries"] if e["dataset"] not in exclude_datasets]
    known = np.array([e["features"] for e in entries])
    mean, scale = known.mean(axis=0), known.std(axis=0) + 1e-9
    distance = np.linalg.norm((known - mean) / scale - (np.asarray(features) - mean) / scale, axis=1)
    per_dataset = len(entries) / len({e["dataset"] for e in entries})
    nearest = np.argsort(distance)[: int(round(NEIGHBOUR_DATASETS * per_dataset))]
    models = [m["model"] for m in kb["models"]]
    aucroc = np.array([[entries[i]["aucroc"][name] for name in models] for i in nearest])
    return Neighbours(models, aucroc, 1.0 / (distance[nearest] + 1e-6))


def calibration(exclude_datasets: tuple[str, ...] = (), kb: dict | None = None) -> tuple[float, float]:
    """What few-label shrinkage needs, measured on the knowledge base without `exclude_datasets`,
    each entry predicted from the other datasets (leave one dataset out):

    - `prior_labels`: the variance one labelled anomaly's rank adds, over the mean squared
      prediction error: how many labelled anomalies an average prediction is worth;
    - the mean `Neighbours.spread` of a model: the spread that goes with that average worth.
    """
    kb = kb or knowledge_base()
    errors, rank_variances, spreads = [], [], []
    for e in kb["entries"]:
        if e["dataset"] in exclude_datasets:
            continue
        near = neighbours(np.array(e["features"]), (*exclude_datasets, e["dataset"]), kb)
        errors += [predicted - e["aucroc"][name] for name, predicted in near.ranking()]
        rank_variances.append(e["anomaly_rank_variance"])
        spreads += [near.spread([name]) for name in near.models]
    return float(np.mean(rank_variances) / np.mean(np.square(errors))), float(np.mean(spreads))


def prior_labels(near: Neighbours, members: list[str], calibrated: tuple[float, float]) -> float:
    """How many labelled anomalies the prediction for `members` is worth on this dataset: the
    knowledge base's average, scaled by how much less than a model's average spread their AUCROC
    spreads across the neighbours (a model that scored alike on all of them is trusted more)."""
    average, mean_spread = calibrated
    return average * mean_spread / max(near.spread(members), 1e-6)  # a model alike on every neighbour has no spread


def shrink_to_prior(observed: float, prior: float, n_labelled: int, prior_labels: float) -> float:
    """Posterior mean AUCROC: the observed AUCROC of `n_labelled` anomalies, shrunk to the predicted one.

    Normal-normal model: the prediction is worth `prior_labels` labelled anomalies, the ratio of
    the variance one labelled anomaly's rank adds to the variance of the prediction's error.
    """
    return (prior_labels * prior + n_labelled * observed) / (prior_labels + n_labelled)
