"""SHAP explanations of anomaly scores: which features made the top anomalies stand out.

Isolation forests take SHAP's exact TreeExplainer (milliseconds for hundreds of rows); every
other detector takes the model-agnostic permutation explainer over `decision_function`,
limited to the top-k rows and a small background sample because it costs many model calls.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest

from .evaluation import _save


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


def explain(detector, X_rows: np.ndarray, background: np.ndarray, feature_names: list[str]) -> Explanation:
    import shap

    forest = _isolation_forest(detector)
    if forest is not None:
        # The tree explainer explains path length, where higher means more normal.
        values = -shap.TreeExplainer(forest)(X_rows).values
        return Explanation("tree", list(feature_names), values)
    masker = shap.maskers.Independent(background, max_samples=len(background))
    explainer = shap.PermutationExplainer(detector.decision_function, masker, seed=0)
    # Two antithetic permutations per row: each costs 2 * n_features + 1 calls over the background.
    values = explainer(X_rows, max_evals=2 * (2 * X_rows.shape[1] + 1), silent=True).values
    return Explanation("permutation", list(feature_names), values)


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
    ax.set(xlabel="mean |SHAP| on the top anomalies", title=f"What drives the top anomalies ({explanation.method})")
    return _save(fig, path)
