"""Active anomaly discovery (`labels.discovery`): an answer re-ranks the batch without refitting the forest."""

import numpy as np
import pytest

from pynomaly_core.labels.discovery import Discovery


def two_clusters(seed: int = 0):
    """400 ordinary rows and two tight clusters of 12 outliers each, equally far from them."""
    rng = np.random.default_rng(seed)
    ordinary = rng.normal(size=(400, 4))
    a = rng.normal(scale=0.3, size=(12, 4)) + [6, 6, 0, 0]
    b = rng.normal(scale=0.3, size=(12, 4)) + [-6, 0, -6, 0]
    return np.vstack([ordinary, a, b]), np.arange(400, 412), np.arange(412, 424)


def mean_rank(discovery: Discovery, rows) -> float:
    """Mean position of `rows` in the queue (0 = shown first)."""
    rank = np.empty(len(discovery.scores))
    rank[discovery.order()] = np.arange(len(discovery.order()))
    return float(rank[rows].mean())


def test_a_confirmed_rows_neighbours_move_up_and_a_dismissed_rows_move_down():
    X, a, b = two_clusters()
    discovery = Discovery.fit(X, seed=1)
    leaves = discovery.leaves
    before_a, before_b = mean_rank(discovery, a[1:]), mean_rank(discovery, b[1:])
    discovery.label({int(a[0]): 1})
    after_a = mean_rank(discovery, a[1:])
    assert after_a < before_a
    discovery.label({int(b[0]): 0})
    assert mean_rank(discovery, b[1:]) > before_b
    assert mean_rank(discovery, a[1:]) <= after_a + 1  # the dismissal did not push the confirmed cluster back
    assert discovery.leaves is leaves  # re-ranked, not refitted
    assert set(discovery.order()) == set(range(len(X))) - {int(a[0]), int(b[0])}  # labelled rows leave the queue


def test_feedback_finds_more_of_a_cluster_than_the_forest_alone():
    X, a, b = two_clusters(seed=2)
    y = np.zeros(len(X), dtype=int)
    y[a] = 1  # only cluster a is of interest; b is unusual but normal
    static = Discovery.fit(X, seed=3)
    static_found = int(y[static.order()[:12]].sum())
    discovery = Discovery.fit(X, seed=3)
    shown = []
    for _ in range(12):
        row = int(discovery.order()[0])
        discovery.label({row: int(y[row])})
        shown.append(row)
    assert int(y[shown].sum()) > static_found


def test_a_later_answer_replaces_an_earlier_one():
    X, a, _ = two_clusters()
    discovery = Discovery.fit(X, seed=1)
    discovery.label({int(a[0]): 1})
    discovery.label({int(a[0]): 0})
    assert discovery.labels == {int(a[0]): 0}


def test_bad_input_is_refused_with_the_row():
    X, a, _ = two_clusters()
    discovery = Discovery.fit(X, seed=1)
    with pytest.raises(ValueError, match="row 3: a label is 1 .* or 0 .*not 2"):
        discovery.label({3: 2})
    with pytest.raises(ValueError, match="row 999 is not in the batch of 424 rows"):
        discovery.label({999: 1})
    X[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7, feature 2 is not a finite number"):
        Discovery.fit(X, seed=1)
