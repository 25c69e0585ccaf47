"""Active anomaly discovery (`labels.discovery`): an answer re-ranks the batch without refitting the forest."""

import numpy as np
import pytest

from pynomaly_core.labels.discovery import Discovery


def two_clusters(seed: int = 0):
    """400 ordinary rows and two tight clusters of 12 outliers each, as far out."""
    rng = np.random.default_rng(seed)
    ordinary = rng.normal(size=(400, 4))
    a = rng.normal(scale=0.3, size=(12, 4)) + [6, 6, 0, 0]
    b = rng.normal(scale=0.3, size=(12, 4)) + [-6, 0, -6, 0]
    return np.vstack([ordinary, a, b]), np.arange(400, 412), np.arange(412, 424)


def mean_rank(discovery: Discovery, rows, labelled) -> float:
    """Mean rank of `rows` by score among the rows not in `labelled` (0 = highest)."""
    rest = np.setdiff1d(np.arange(len(discovery.scores)), labelled)
    rank = np.empty(len(discovery.scores))
    rank[rest[np.argsort(-discovery.scores[rest], kind="stable")]] = np.arange(len(rest))
    return float(rank[rows].mean())


def test_a_dismissed_rows_neighbours_move_down_and_a_confirmed_rows_move_up():
    X, a, b = two_clusters()
    discovery = Discovery.fit(X, seed=1)
    leaves = discovery.leaves
    order = discovery.order()
    # AAD moves weights only for broken constraints: a dismissed row ranked in the top 3 % (13 rows here),
    # a confirmed one ranked below it. Dismiss the first row, confirm the other cluster's last.
    dismissed = int(order[0])
    near, far = (b, a) if dismissed in b else (a, b)
    confirmed = int(far[np.argmax([np.flatnonzero(order == r)[0] for r in far])])
    assert np.flatnonzero(order == confirmed)[0] >= 13
    labelled = [dismissed, confirmed]
    others_near, others_far = np.setdiff1d(near, dismissed), np.setdiff1d(far, confirmed)
    before_near, before_far = mean_rank(discovery, others_near, labelled), mean_rank(discovery, others_far, labelled)
    discovery.label({dismissed: 0})
    after_near = mean_rank(discovery, others_near, labelled)
    assert after_near > before_near
    discovery.label({confirmed: 1})
    assert mean_rank(discovery, others_far, labelled) < before_far
    assert mean_rank(discovery, others_near, labelled) > before_near  # the confirmation did not undo the dismissal
    assert discovery.leaves is leaves  # re-ranked, not refitted
    assert set(discovery.order()) == set(range(len(X))) - set(labelled)  # labelled rows leave the queue


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


def test_the_experiment_scripts_settings_unit_rows_and_a_prior_that_weakens_with_labels():
    """The product runs AAD as the authors' aad.sh does; demo_aad.py (the issue's anchor) differs in both."""
    X, a, b = two_clusters(seed=4)
    script, demo = Discovery.fit(X, seed=5), Discovery.fit(X, seed=5, settings="demo_aad")
    values = script.leaf_values[script.leaves]  # minus each row's leaf depths, one per tree
    uniform = script.prior[0]
    assert np.allclose(script.scores, uniform * values.sum(axis=1) / np.linalg.norm(values, axis=1))
    assert np.allclose(demo.scores, uniform * values.sum(axis=1))
    # The same 30 answers: with the prior's weight divided by the labels the weights move further from uniform.
    fixed_prior = Discovery(script.leaves, script.leaf_values)
    fixed_prior.adaptive_prior = False
    y = np.isin(np.arange(len(X)), a).astype(int)
    answers = {int(row): int(y[row]) for row in script.order()[:30]}
    assert 0 < sum(answers.values()) < 30  # both kinds of answer
    for discovery in (script, fixed_prior):
        discovery.label(answers)
    assert np.linalg.norm(script.weights - script.prior) > np.linalg.norm(fixed_prior.weights - fixed_prior.prior)
    with pytest.raises(ValueError, match="discovery settings are one of \\['aad.sh', 'demo_aad'\\], not 'paper'"):
        Discovery.fit(X, seed=5, settings="paper")
