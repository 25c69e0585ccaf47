"""A positive-unlabelled learner: gradient-boosted trees of the labelled anomalies (1) against
every other row (0), the plain classifier that ADBench found best of 30 methods with 1 % of the
anomalies labelled (Han et al. 2022, Table D6: CatBoost, no tuning). When the labelled anomalies
are a random pick of all anomalies, labelled-against-unlabelled ranks rows as anomalies against
normals would (Elkan & Noto 2008).

Labels: 1 a confirmed anomaly, 0 unknown, `KNOWN_NORMAL` (-1) a row an analyst dismissed. A
dismissed row is a 0 to the classifier, weighted `DISMISSED_WEIGHT` times an unknown row: it is
certainly normal, where an unknown row may hide an anomaly.
"""

from __future__ import annotations

import numpy as np

from .base import ModelDetector
from .packages import missing_dependency
from .spec import DetectorSpec

KNOWN_NORMAL = -1
# Fixed before measuring: a dismissed row counts as five unknown ones (docs/model-selection.md).
DISMISSED_WEIGHT = 5.0
LEARNERS = ("catboost", "hgb")


def targets_and_weights(y, class_weight: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's 0/1 target and each row's weight, from labels 1 / 0 / KNOWN_NORMAL."""
    y = np.asarray(y)
    unexpected = sorted(set(np.unique(y).tolist()) - {1, 0, KNOWN_NORMAL})
    if unexpected:
        raise ValueError(f"labels must be 1 (anomaly), 0 (unknown) or {KNOWN_NORMAL} (dismissed as normal); got {unexpected}")
    target = (y == 1).astype(int)
    if target.sum() == len(target):
        raise ValueError("a positive-unlabelled learner needs rows besides the labelled anomalies: every row is labelled 1")
    weight = np.where(y == KNOWN_NORMAL, DISMISSED_WEIGHT, 1.0)
    if class_weight == "balanced":  # the anomalies together weigh as much as the other rows
        weight[target == 1] *= weight[target == 0].sum() / weight[target == 1].sum()
    return target, weight


def classifier(learner: str, random_state: int | None):
    """The learner with its library defaults (ADBench ran CatBoost untuned); one thread: fits run
    side by side in the benchmarks and the parallel workers."""
    if learner == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=random_state)
    if learner == "catboost":
        try:
            from catboost import CatBoostClassifier
        except ModuleNotFoundError as err:
            raise missing_dependency("pu_boost", err) from None
        return CatBoostClassifier(random_state=random_state, verbose=False, thread_count=1, allow_writing_files=False)
    raise ValueError(f"pu_boost: learner must be one of {', '.join(LEARNERS)}; got {learner!r}")


def raw_scores(model, X) -> np.ndarray:
    """Log-odds rather than probabilities: saturated probabilities tie, log-odds keep the order."""
    if hasattr(model, "decision_function"):
        return model.decision_function(X)
    return model.predict(X, prediction_type="RawFormulaVal")


class PositiveUnlabelledBoosting(ModelDetector):
    """`pu_boost`. params: `learner` (catboost, the default, or hgb), `class_weight` (None or
    balanced). The label-free detectors' scores as extra features (XGBOD's idea) were measured
    and dropped (docs/model-selection.md)."""

    backend = "pu"
    python_dependencies = ("sklearn", "catboost")
    needs_labels = True

    def _fit(self, X, y):
        params = self.params or {}
        target, weight = targets_and_weights(y, params.get("class_weight"))
        self.estimator_ = classifier(params.get("learner", "catboost"), self.random_state).fit(X, target, sample_weight=weight)
        return raw_scores(self.estimator_, X)

    def _score(self, X):
        return raw_scores(self.estimator_, X)


# Not tuned in a search: a few labels cannot choose hyper-parameters without over-fitting (ADBench ran it untuned).
SPECS = [DetectorSpec("pu_boost", PositiveUnlabelledBoosting, "pu_boost", lambda t: {}, {"learner": "hgb"})]
