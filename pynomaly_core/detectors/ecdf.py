"""Empirical distributions fitted once and read by search: ECOD/COPOD's columns, and the training
scores that `predict_proba` and rank ensembles turn a new score into a percentile with. Bounded
in size whatever the training rows, so a served row's cost and a saved model's size are too."""

from __future__ import annotations

import numpy as np

# A table keeps every distinct value up to this many; beyond, at most this many knots, half at
# evenly spaced ranks and a quarter at geometrically spaced ranks from either end (the smallest
# and largest value among them), with the counts between knots interpolated: a count is then off
# by at most 2n / MAX_KNOTS rows, and in the tails, where ECOD's -log weighs it, by a small factor
# ((n / 2) ** (4 / MAX_KNOTS): 1.7 % for n = 5 million). Bounds the model whatever the training rows;
# above the 7,000 training rows of the ADBench protocol, so the knowledge base's figures are exact.
MAX_KNOTS = 8192


class EmpiricalDistribution:
    """The number of training values at or below (`count_le`) and at or above (`count_ge`) any x."""

    def __init__(self, values: np.ndarray, max_knots: int = MAX_KNOTS):
        values = np.asarray(values, dtype=np.float64).ravel()
        distinct, counts = np.unique(values, return_counts=True)
        at_or_below = np.cumsum(counts)
        self.n = len(values)
        self.exact = len(distinct) <= max_knots
        if not self.exact:
            tail = np.geomspace(1, self.n / 2, max_knots // 4)
            ranks = np.concatenate([tail, np.linspace(1, self.n, max_knots // 2), self.n + 1 - tail])
            keep = np.unique(np.searchsorted(at_or_below, ranks))
            distinct, counts, at_or_below = distinct[keep], counts[keep], at_or_below[keep]
        self.values = distinct
        self.at_or_below = at_or_below
        self.below = at_or_below - counts

    def _up_to(self, index: np.ndarray) -> np.ndarray:
        """Training values at or below the `index`-th distinct value (1-based; 0: none)."""
        return np.where(index > 0, self.at_or_below[np.maximum(index - 1, 0)], 0)

    def count_le(self, x) -> np.ndarray:
        if self.exact:
            return self._up_to(np.searchsorted(self.values, x, side="right"))
        return np.interp(x, self.values, self.at_or_below, left=0, right=self.n)

    def count_ge(self, x) -> np.ndarray:
        if self.exact:
            return self.n - self._up_to(np.searchsorted(self.values, x, side="left"))
        return self.n - np.interp(x, self.values, self.below, left=0, right=self.n)

    def share_le(self, x) -> np.ndarray:
        """The share of training values at or below x (a percentile in [0, 1])."""
        return self.count_le(x) / self.n

    @property
    def size(self) -> int:
        return len(self.values)

