"""Percentile ranks: where values fall among sorted reference scores, as shares of the reference.

The kinds are those of `scipy.stats.percentileofscore` (divided by 100); that function compares
every value with every reference score (an n x m matrix), this one binary-searches the sorted
reference, so it serves a 100,000-row batch too.
"""

from __future__ import annotations

import numpy as np


def percentile_ranks(sorted_reference: np.ndarray, values, kind: str = "weak") -> np.ndarray:
    """`weak`: the share of the reference at or below each value. `mean`: below it, ties counted
    half. `rank`: a reference member's own rank, ties averaged (`scipy.stats.rankdata(x) / len(x)`
    when `values` is the reference itself)."""
    n = len(sorted_reference)
    left = np.searchsorted(sorted_reference, values, side="left")
    right = np.searchsorted(sorted_reference, values, side="right")
    if kind == "weak":
        return right / n
    if kind == "mean":
        return (left + right) / (2 * n)
    if kind == "rank":
        return (left + right + (left < right)) / (2 * n)
    raise ValueError(f"percentile_ranks: kind must be weak, mean or rank, not {kind!r}")
