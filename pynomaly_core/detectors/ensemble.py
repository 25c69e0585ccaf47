"""A rank-averaging ensemble of registered detectors (ADBench: robust across datasets)."""

from __future__ import annotations

import numpy as np

from .base import BaseDetector


class RankEnsemble(BaseDetector):
    """Averages each member's score percentile among its own training scores."""

    backend = "ensemble"

    def __init__(self, members=("iforest", "copod", "hbos"), contamination=0.1, random_state=None):
        self.members = members
        self.contamination = contamination
        self.random_state = random_state

    def _fit(self, X, y):
        from . import registry  # the registry lists the members; it never lists ensembles

        self.detectors_ = [registry.get(name).build({}, self.contamination, self.random_state).fit(X) for name in self.members]
        self.member_training_scores_ = [np.sort(d.decision_scores_) for d in self.detectors_]
        return self._average([d.decision_scores_ for d in self.detectors_])

    def _average(self, member_scores) -> np.ndarray:
        percentiles = [
            np.searchsorted(reference, scores, side="right") / len(reference)
            for reference, scores in zip(self.member_training_scores_, member_scores)
        ]
        return np.mean(percentiles, axis=0)

    def _score(self, X):
        return self._average([d.decision_function(X) for d in self.detectors_])
