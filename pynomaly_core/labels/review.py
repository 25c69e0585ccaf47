"""Active learning: the order in which the review queue shows a batch's rows.

A label teaches the next model most where the current model is least sure, and it is unsure in
two ways:

- **near the threshold**: a row scored just above or just below it is flagged or passed by a
  hair, and its label says on which side the boundary should lie. Distance is measured in batch
  quantiles, |q(score) - q(threshold)|, so it means the same for every detector's score scale
  (q: the share of the batch's rows scoring below, ties counted half);
- **where the ensemble's members disagree**: a row that one member ranks among its top and
  another among its ordinary rows is where the few-label selection can tell the members apart
  (a labelled anomaly that every candidate ranks first raises every candidate's ROC-AUC alike,
  and so says nothing about which to choose). Disagreement is the standard deviation of the
  members' percentiles (each member's score as its percentile among its own training scores,
  the numbers the rank ensemble averages; 0 for a single model).

The rule, fixed before any measurement: **priority = disagreement - distance**, both in
percentile units, highest first. A spread of 0.1 between the members weighs as much as being 0.1
of the batch away from the threshold; neither term has a tuned weight. Ties go to the higher
score, then to the earlier row. With a single model the queue is the rows nearest the
threshold first.
"""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline

from ..detectors.ensemble import RankEnsemble
from ..detectors.ranks import percentile_ranks

# Priorities equal up to float rounding are ties (a row's distance and disagreement are sums of fractions).
DECIMALS = 12


def member_scores(model, X) -> np.ndarray | None:
    """Rows x members: the members' percentiles of a fitted rank ensemble (or of a pipeline ending in
    one, X then being its raw input), as `review_order` takes them; None for a single detector."""
    if isinstance(model, Pipeline):
        model, X = model[-1], model[:-1].transform(X)
    if not isinstance(model, RankEnsemble):
        return None
    return model.member_percentiles(X)


def review_order(scores, member_scores: np.ndarray | None, threshold: float) -> np.ndarray:
    """Row positions of the batch, the row whose label would teach the next model most first."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"review_order: score of row {int(np.flatnonzero(~np.isfinite(scores))[0])} is not finite")
    if not np.isfinite(threshold):
        raise ValueError(f"review_order: threshold {threshold} is not finite")
    n = len(scores)
    if n == 0:
        return np.arange(0)
    sorted_scores = np.sort(scores)
    # Ties counted half; priorities are rounded below, so equal distances stay ties.
    distance = np.abs(percentile_ranks(sorted_scores, scores, "mean") - percentile_ranks(sorted_scores, threshold, "mean"))
    disagreement = np.zeros(n)
    if member_scores is not None:
        members = np.asarray(member_scores, dtype=np.float64)
        if members.ndim != 2 or members.shape[0] != n:
            raise ValueError(f"review_order: member_scores must be rows x members with {n} rows, got shape {members.shape}")
        if not np.all((members >= 0) & (members <= 1)):
            raise ValueError("review_order: member_scores must be percentiles in [0, 1] (see labels.review.member_scores)")
        disagreement = members.std(axis=1)
    priority = np.round(disagreement - distance, DECIMALS)
    # np.lexsort sorts by its last key first: priority, then score (both descending), then position.
    return np.lexsort((np.arange(n), -scores, -priority))
