"""Explanations of anomaly scores: which features made the top anomalies stand out.

SHAP (`explain.method: shap`): isolation forests take SHAP's exact TreeExplainer (milliseconds
for hundreds of rows); every other detector takes the model-agnostic permutation explainer over
`decision_function`, limited to the top-k rows and a small background sample because it costs
many model calls.

LIME (`explain.method: lime`, extra `explain`; `lime_explanation` for one row on demand): the
weights of LIME's local linear model of the detector's score on perturbations of the row in which
some features keep the row's value and the others take a background row's; a positive weight
means the row's own value of that feature raises its score (`lime_explain` says why not LIME's
tabular sampler).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import pairwise_distances
from sklearn.pipeline import Pipeline

from .metrics import _save


@dataclass
class Explanation:
    method: str
    feature_names: list[str]
    values: np.ndarray  # rows x features, contribution to the anomaly score (positive = more anomalous)

    def top_features(self, row: int, n: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.values[row])[:n]
        return [(self.feature_names[i], float(self.values[row, i])) for i in order]

    def global_importance(self) -> dict[str, float]:
        mean_abs = np.abs(self.values).mean(axis=0)
        return {self.feature_names[i]: float(mean_abs[i]) for i in np.argsort(-mean_abs)}


def _isolation_forest(detector) -> IsolationForest | None:
    wrapped = getattr(detector, "estimator_", None)
    wrapped = getattr(wrapped, "detector_", wrapped)  # PyOD's IForest keeps scikit-learn's forest in detector_
    return wrapped if isinstance(wrapped, IsolationForest) else None


class ShapExplainer:
    """SHAP for one fitted detector, set up once and applied to any rows (the workbench keeps one per model).

    An isolation forest's tree explainer reads every node of every tree in Python when it is built (0.7 to 1.3 s
    for the demo's 100 trees on this loaded machine, 0.04 s for the values of 25 rows), so it is built once. The
    permutation explainer is built for each call, as it seeds NumPy's generator when built: a row's values are
    then the same whichever rows were explained before."""

    def __init__(self, detector, background: np.ndarray, feature_names: list[str]):
        import shap

        self.detector, self.background, self.feature_names = detector, background, list(feature_names)
        forest = _isolation_forest(detector)
        self.method = "permutation" if forest is None else "tree"
        self._tree = None if forest is None else shap.TreeExplainer(forest)
        self._lock = threading.Lock()  # the tree explainer keeps its last call's expected value on itself

    def __call__(self, X_rows: np.ndarray) -> Explanation:
        import shap

        if self._tree is not None:
            with self._lock:
                # The tree explainer explains path length, where higher means more normal.
                values = -self._tree(X_rows).values
        else:
            masker = shap.maskers.Independent(self.background, max_samples=len(self.background))
            explainer = shap.PermutationExplainer(self.detector.decision_function, masker, seed=0)
            # Two antithetic permutations per row: each costs 2 * n_features + 1 calls over the background.
            values = explainer(X_rows, max_evals=2 * (2 * X_rows.shape[1] + 1), silent=True).values
        return Explanation(self.method, self.feature_names, values)


def explain(detector, X_rows: np.ndarray, background: np.ndarray, feature_names: list[str]) -> Explanation:
    return ShapExplainer(detector, background, feature_names)(X_rows)


class _Sum:
    def decision_function(self, X):
        return X.sum(axis=1)


def warm_up() -> None:
    """Explain a tiny made-up problem with the permutation explainer, so that numba compiles SHAP's masking functions
    now: compiled on first use in each process, they took 11 to 38 s of a server's first SHAP request on this loaded
    2-core machine (the tree explainer does not use them)."""
    rows = np.arange(6, dtype="float64").reshape(2, 3)
    explain(_Sum(), rows, rows[::-1].copy(), ["a", "b", "c"])


LIME_SAMPLES = 2000  # perturbations per row
LIME_KERNEL_WIDTH = 25  # LIME's own for binary representations (its text explainer), on cosine distance x 100


def _lime_row(lime, detector, row: np.ndarray, background: np.ndarray, seed: int) -> np.ndarray:
    """One row's LIME weights. Each perturbation keeps a random subset of the row's values and takes
    the others from a random background row (at least one replaced, as LIME's text explainer drops
    words); LIME fits its weighted ridge model of the score on which values were kept."""
    rng = np.random.default_rng(seed)
    n_features = len(row)
    kept = np.ones((LIME_SAMPLES, n_features), dtype=int)
    for mask in kept[1:]:
        mask[rng.choice(n_features, rng.integers(1, n_features + 1), replace=False)] = 0
    samples = np.where(kept == 1, row, background[rng.integers(len(background), size=LIME_SAMPLES)])
    scores = detector.decision_function(samples)
    distances = pairwise_distances(kept, kept[:1], metric="cosine").ravel() * 100
    _, weights, _, _ = lime.explain_instance_with_data(kept, scores[:, None], distances, 0, n_features, feature_selection="none")
    values = np.zeros(n_features)
    for feature, weight in weights:
        values[feature] = weight
    return values


def lime_explain(detector, X_rows: np.ndarray, background: np.ndarray, feature_names: list[str], seed: int = 0) -> Explanation:
    """LIME with a binary representation, "the row keeps its own value of this feature" or "a
    background row's value stands in", as LIME represents words and superpixels. Its tabular
    explainer samples from the background's quartile bins instead, so a value beyond the
    background's range, the usual anomaly, never enters the neighbourhood: a row given an absurd
    area was explained by other features for IForest, KNN, HBOS and COPOD alike."""
    try:
        from lime.lime_base import LimeBase
    except ImportError:
        raise ImportError("explain.method 'lime' needs the lime package: pip install 'pynomaly[explain]'") from None
    lime = LimeBase(lambda d: np.sqrt(np.exp(-(d**2) / LIME_KERNEL_WIDTH**2)), random_state=seed)
    background = np.asarray(background, dtype=np.float64)
    values = np.array([_lime_row(lime, detector, row, background, seed) for row in np.asarray(X_rows, dtype=np.float64)])
    return Explanation("lime", list(feature_names), values.reshape(len(X_rows), len(feature_names)))


def lime_explanation(model: Pipeline, frame, row: int, seed: int = 0) -> list[tuple[str, float]]:
    """LIME for row position `row` of `frame`, every feature with its weight, most anomalous first.

    `model` is the fitted pipeline (preprocessor, detector) that `train` saves and the registered
    model holds; `frame` the rows as it takes them (`preprocessing.features`), whose own spread
    is the background LIME samples from.
    """
    if not 0 <= row < len(frame):
        raise IndexError(f"row {row}: the frame has {len(frame)} rows")
    if len(frame) < 2:
        raise ValueError("LIME needs other rows whose values stand in for the row's: the frame has 1 row")
    preprocessor, detector = model[:-1], model[-1]
    X = np.asarray(preprocessor.transform(frame), dtype=np.float64)
    explanation = lime_explain(detector, X[[row]], X, list(preprocessor.get_feature_names_out()), seed)
    return explanation.top_features(0, X.shape[1])


def explain_nodes(detector, graph, nodes: np.ndarray, background: np.ndarray, feature_names: list[str]) -> Explanation:
    """Graph detectors: each node's score as a function of its own features, the rest of the graph
    held fixed, by the permutation explainer. Every evaluation runs the network over the whole
    graph, so the baseline is one row, the background's median (baseline Shapley values)."""
    import shap

    masker = shap.maskers.Independent(np.median(background, axis=0, keepdims=True))
    values = []
    for node in nodes:
        def node_score(rows, node=node):
            scores = []
            for row in rows:
                x = graph.x.copy()
                x[node] = row
                scores.append(detector.decision_function(replace(graph, x=x))[node])
            return np.array(scores)

        explainer = shap.PermutationExplainer(node_score, masker, seed=0)
        values.append(explainer(graph.x[[node]], max_evals=2 * (2 * graph.x.shape[1] + 1), silent=True).values[0])
    return Explanation("permutation", list(feature_names), np.array(values).reshape(len(nodes), -1))


def plot_importance(explanation: Explanation, path: Path, n: int = 15) -> Path:
    import matplotlib.pyplot as plt

    importance = list(explanation.global_importance().items())[:n][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(importance) + 1.2))
    ax.barh([name for name, _ in importance], [value for _, value in importance], color="tab:red")
    weight = "LIME weight" if explanation.method == "lime" else "SHAP"
    ax.set(xlabel=f"mean |{weight}| on the top anomalies", title=f"What drives the top anomalies ({explanation.method})")
    return _save(fig, path)
