"""A rank-averaging ensemble of registered detectors (ADBench: robust across datasets)."""

from __future__ import annotations

import numpy as np

from . import registry  # the registry lists the members; it never lists ensembles
from .base import FIT_ERRORS, BaseDetector
from .ranks import percentile_ranks
from .spec import model_name


def percentiles(sorted_training_scores: list[np.ndarray], scores: list[np.ndarray]) -> np.ndarray:
    """Each member's scores as percentiles among its own (sorted) training scores: members x rows."""
    return np.array([percentile_ranks(reference, member) for reference, member in zip(sorted_training_scores, scores)])


def rank_average(sorted_training_scores: list[np.ndarray], scores: list[np.ndarray], weights=None) -> np.ndarray:
    """Each member's scores as percentiles among its own (sorted) training scores, averaged (with `weights`)."""
    return np.average(percentiles(sorted_training_scores, scores), axis=0, weights=weights)


class RankEnsemble(BaseDetector):
    """Averages each member's score percentile among its own training scores.

    `members` are registry names; `member_params` their hyper-parameters, one dict per member
    (default parameters when None). A name may appear twice with different parameters.
    `weights`, one per member, weigh the average (equal when None). A member that cannot fit the
    data (CBLOF finding no cluster separation, a singular covariance) is left out with its weight,
    and named in `left_out_`; when none fits, the fit fails.
    """

    backend = "ensemble"

    def __init__(self, members=("iforest", "copod", "hbos"), member_params=None, weights=None, contamination=0.1, random_state=None):
        self.members = members
        self.member_params = member_params
        self.weights = weights
        self.contamination = contamination
        self.random_state = random_state

    @staticmethod
    def members_need_labels(members) -> bool:
        """Whether `fit` needs the known labels: when one of the members does."""
        return any(registry.get(name).needs_labels for name in members)

    def _fit(self, X, y):
        params = self.member_params or [{}] * len(self.members)
        if len(params) != len(self.members):
            raise ValueError(f"RankEnsemble: {len(self.members)} members but {len(params)} member_params")
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError(f"RankEnsemble: {len(self.members)} members but {len(self.weights)} weights")
        self.detectors_, self.weights_, self.left_out_ = [], [], {}
        for name, member_params, weight in zip(self.members, params, self.weights or [1] * len(self.members)):
            spec = registry.get(name)
            try:  # only semi-supervised members see the labels
                self.detectors_.append(spec.build(member_params, self.contamination, self.random_state).fit(X, y if spec.needs_labels else None))
            except FIT_ERRORS as err:
                self.left_out_[model_name(name, member_params)] = f"{type(err).__name__}: {err}"
                continue
            self.weights_.append(weight)
        if not self.detectors_:
            raise ValueError(f"RankEnsemble: no member could fit this data: {self.left_out_}")
        self.member_training_scores_ = [np.sort(d.decision_scores_) for d in self.detectors_]
        return self._average([d.decision_scores_ for d in self.detectors_])

    def _average(self, member_scores) -> np.ndarray:
        return rank_average(self.member_training_scores_, member_scores, self.weights_)

    def _score(self, X):
        return self._average([d.decision_function(X) for d in self.detectors_])

    def member_percentiles(self, X) -> np.ndarray:
        """Rows x fitted members: each member's score of X as its percentile among its own training
        scores, the numbers the ensemble averages (the review queue reads their disagreement)."""
        return percentiles(self.member_training_scores_, [d.decision_function(X) for d in self.detectors_]).T

