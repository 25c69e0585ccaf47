"""ECOD and COPOD scored by search in fit-time tables of each column's empirical distribution.

PyOD's ECOD and COPOD keep the training rows and, at every `decision_function`, append the new
rows to them and sort every column again: a served row costs as much as scoring the training
set, and the fitted model holds four n x d matrices. Here each column's empirical distribution
is a table built at fit time (its distinct values and how many training values lie at or
below each), and a new row is scored by `np.searchsorted` in it.

The scores are PyOD 3.6.7's, to rounding, with one documented difference: PyOD scores a batch
transductively, each row's ECDF counting the other rows of its batch (and the skewness sign of
the training rows plus the batch). Here every row is scored as PyOD scores it when it arrives
alone, (training values <= x, plus the row itself) / (n + 1), with the training rows' skewness
sign: a row's score does not depend on which rows it is sent with. The training rows' scores
are PyOD's `decision_scores_`. The skewness sign is computed column by column (PyOD: over the
matrix): where a column's skewness is zero to rounding the two could differ; for ECOD only a
sign of 0 changes a score, since PyOD takes the larger of the two tails' -log whatever the sign.
A column constant in training has sign 0 here; PyOD, scoring a row with it, takes the sign of
the row's side, which gives the same score (the row's own tail is 0).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import skew

from .base import ModelDetector
from .ecdf import MAX_KNOTS, EmpiricalDistribution


def _combine(model: str, left: np.ndarray, right: np.ndarray, sign: float) -> np.ndarray:
    """One column's outlier score from its tail probabilities' -log, as PyOD 3.6.7 writes it
    (`sign`: the column's skewness sign, 0 for a constant column)."""
    skewed = left * -1 * np.sign(sign - 1) + right * np.sign(sign + 1)
    if model == "ecod":
        return np.maximum(skewed, np.maximum(left, right))
    return np.maximum(skewed, (left + right) / 2)  # copod


class ECDFDetector(ModelDetector):
    """ECOD (Li et al. 2022) and COPOD (Li et al. 2020) as PyOD 3.6.7 computes them, from fit-time
    tables. `params` may hold `max_knots` (default `MAX_KNOTS`), the bound on each column's table."""

    backend = "pyod"

    def _fit(self, X, y):
        max_knots = (self.params or {}).get("max_knots", MAX_KNOTS)
        self.tables_, self.skew_sign_ = [], np.empty(X.shape[1])
        scores = np.zeros(len(X))
        for j in range(X.shape[1]):  # a column at a time: no n x d temporaries
            column = X[:, j]
            ordered = np.sort(column)  # training scores are exact whatever the table keeps
            left = -np.log(np.searchsorted(ordered, column, side="right") / len(X))
            right = -np.log((len(X) - np.searchsorted(ordered, column, side="left")) / len(X))
            self.skew_sign_[j] = np.sign(np.nan_to_num(skew(column)))  # PyOD's: a constant column's NaN is 0
            scores += _combine(self.model, left, right, self.skew_sign_[j])
            self.tables_.append(EmpiricalDistribution(ordered, max_knots))
        return scores

    def _score(self, X):
        scores = np.zeros(len(X))
        for j, table in enumerate(self.tables_):
            # Each row counts itself among the training values, as PyOD does for a row scored alone.
            left = -np.log((table.count_le(X[:, j]) + 1) / (table.n + 1))
            right = -np.log((table.count_ge(X[:, j]) + 1) / (table.n + 1))
            scores += _combine(self.model, left, right, self.skew_sign_[j])
        return scores
