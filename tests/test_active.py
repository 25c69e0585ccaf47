"""The review queue's order (`active.review_order`), on cases computed by hand, and the members'
percentiles it reads from a fitted rank ensemble."""

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import RobustScaler

from pynomaly_core.labels.review import member_scores, review_order
from pynomaly_core.detectors.registry import get
from pynomaly_core.selection.base import ensemble_spec
from tests.conftest import ROOT


def test_rows_nearest_the_threshold_come_first():
    # Batch quantiles (ties half): 1/12, 3/12, ..., 11/12; the threshold 0.5 sits at 6/12.
    # Distances 5, 3, 1, 1, 3, 5 twelfths; equal distances go to the higher score.
    scores = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert review_order(scores, None, 0.5).tolist() == [3, 2, 4, 1, 5, 0]


def test_a_row_the_members_disagree_on_comes_before_one_at_the_threshold():
    scores = [0.1, 0.5, 0.9]
    # Row 1 sits on the threshold (distance 0, members agree: priority 0). Row 2 is 1/3 of the
    # batch above it, but its members say 0.2 and 1.0 (std 0.4): priority 0.4 - 1/3 > 0.
    members = [[0.1, 0.1], [0.5, 0.5], [0.2, 1.0]]
    assert review_order(scores, members, 0.5).tolist() == [2, 1, 0]
    # With a smaller disagreement (std 0.25 < 1/3) the row at the threshold leads again.
    members[2] = [0.5, 1.0]
    assert review_order(scores, members, 0.5).tolist() == [1, 2, 0]


def test_ties_go_to_the_higher_score_then_the_earlier_row():
    assert review_order([0.2, 0.8], None, 0.5).tolist() == [1, 0]  # 1/4 either side of the threshold
    assert review_order([0.3, 0.3, 0.3], None, 0.3).tolist() == [0, 1, 2]
    # Rows 1 and 3 lie one row either side of the threshold (distance 2/10) with the same
    # disagreement (std 0.1): priority -0.1 both, after row 2 on the threshold (0), before rows
    # 0 and 4 (-0.4); between them the higher score leads.
    scores = [0.1, 0.4, 0.5, 0.6, 0.9]
    members = [[0.1, 0.1], [0.3, 0.5], [0.5, 0.5], [0.5, 0.7], [0.9, 0.9]]
    assert review_order(scores, members, 0.5).tolist() == [2, 3, 1, 4, 0]


def test_a_single_model_is_ordered_as_members_that_always_agree():
    scores = np.random.default_rng(0).random(200)
    agreeing = np.column_stack([scores, scores, scores])
    single = review_order(scores, None, 0.9)
    assert single.tolist() == review_order(scores, agreeing, 0.9).tolist()
    assert sorted(single.tolist()) == list(range(200))
    # The first two rows are the two scores either side of the threshold.
    below = np.sort(scores[scores < 0.9])[-1]
    above = np.sort(scores[scores > 0.9])[0]
    assert set(scores[single[:2]]) == {below, above}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="rows x members with 3 rows, got shape \\(2, 2\\)"):
        review_order([0.1, 0.2, 0.3], [[0.1, 0.2], [0.3, 0.4]], 0.2)
    with pytest.raises(ValueError, match="score of row 1 is not finite"):
        review_order([0.1, np.nan], None, 0.2)
    with pytest.raises(ValueError, match="percentiles in \\[0, 1\\]"):
        review_order([0.1, 0.2], [[3.0, 0.1], [0.1, 0.2]], 0.2)
    assert review_order([], None, 0.5).tolist() == []


@pytest.fixture(scope="module")
def cells():
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    return frame.drop(columns=["sample_id", "malignant"]).to_numpy()


def test_member_scores_are_the_percentiles_the_ensemble_averages(cells):
    spec = ensemble_spec(["iforest", "knn", "hbos"], weights=[2, 1, 1])
    pipeline = make_pipeline(RobustScaler(), spec.build(None, 0.1, 0)).fit(cells)
    members = member_scores(pipeline, cells[:50])
    assert members.shape == (50, 3)
    assert members.min() >= 0 and members.max() <= 1
    np.testing.assert_allclose(members @ np.array([2, 1, 1]) / 4, pipeline.decision_function(cells[:50]))
    # The members do not agree everywhere: otherwise disagreement would order nothing.
    assert members.std(axis=1).max() > 0.1
    assert member_scores(make_pipeline(RobustScaler(), get("iforest").build({}, 0.1, 0)).fit(cells), cells) is None
