"""Label-free model selection learned from benchmark datasets (after MetaOD, Zhao et al. 2021).

A model is a detector with fixed hyper-parameters. A dataset is described by label-free
meta-features: how strongly a few diverse "landmark" detectors agree with each other on it
(pairwise Spearman correlations of their training scores, which tell local from global and
axis-aligned from correlated anomalies) and its size. `selection_kb.json` holds these
meta-features and every model's test AUCROC for the ADBench development datasets (three seeds
each). For a new dataset, the models are ranked by their distance-weighted mean AUCROC on the
most similar development datasets.
"""

from __future__ import annotations

import itertools
import json
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


def rank_models(features: np.ndarray, exclude_datasets: tuple[str, ...] = (), kb: dict | None = None) -> list[tuple[str, float]]:
    """Knowledge-base models, best first, with their predicted AUCROC on this dataset."""
    kb = kb or knowledge_base()
    names = [m["model"] for m in kb["models"]]
    entries = [e for e in kb["entries"] if e["dataset"] not in exclude_datasets]
    known = np.array([e["features"] for e in entries])
    mean, spread = known.mean(axis=0), known.std(axis=0) + 1e-9
    distance = np.linalg.norm((known - mean) / spread - (features - mean) / spread, axis=1)
    per_dataset = len(entries) / len({e["dataset"] for e in entries})
    nearest = np.argsort(distance)[: int(round(NEIGHBOUR_DATASETS * per_dataset))]
    weights = 1.0 / (distance[nearest] + 1e-6)
    aucs = np.array([[entries[i]["aucroc"][name] for name in names] for i in nearest])
    predicted = weights @ aucs / weights.sum()
    order = np.argsort(-predicted, kind="stable")
    return [(names[i], float(predicted[i])) for i in order]


def shrink_to_prior(observed: float, prior: float, n_labelled: int, prior_labels: float) -> float:
    """Posterior mean AUCROC: the observed AUCROC of `n_labelled` anomalies, shrunk to the predicted one.

    Normal-normal model: the prediction is worth `prior_labels` labelled anomalies, the ratio of
    the variance one labelled anomaly's rank adds to the variance of the prediction's error
    (both measured on the knowledge base, `prior_labels` in `selection_kb.json`).
    """
    return (prior_labels * prior + n_labelled * observed) / (prior_labels + n_labelled)
