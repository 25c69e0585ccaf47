"""SHAP explanations point at the feature that makes a row anomalous."""

import pandas as pd
import pytest
from sklearn.preprocessing import RobustScaler

from pynomaly_core.detectors.registry import get
from pynomaly_core.explain import explain
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def cells():
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    normal = frame[frame.malignant == 0].drop(columns=["sample_id", "malignant"])
    names = list(normal.columns[:8])
    X = RobustScaler().fit_transform(normal[names])
    odd = X[:3].copy()
    odd[:, names.index("mean_area")] += 12  # three benign cells given an absurd area
    return X, odd, names


@pytest.mark.parametrize("detector, method", [("iforest", "tree"), ("knn", "permutation")])
def test_planted_anomaly_is_explained_by_its_feature(cells, detector, method):
    X, odd, names = cells
    fitted = get(detector).build({}, 0.1, 0).fit(X)
    explanation = explain(fitted, odd, X[:40], names)
    assert explanation.method == method
    assert [explanation.top_features(row, 1)[0][0] for row in range(3)] == ["mean_area"] * 3
    assert next(iter(explanation.global_importance())) == "mean_area"
    assert explanation.values[:, names.index("mean_area")].min() > 0  # pushes the score up
