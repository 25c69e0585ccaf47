"""One generic contract test over every registered detector, on a small slice of real data."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import RobustScaler

from pynomaly_core.detectors.registry import REGISTRY, find, get
from pynomaly_core.detectors.sklearn import SklearnDetector
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def tiny():
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    normal = frame[frame.malignant == 0].head(90)
    anomalous = frame[frame.malignant == 1].head(10)
    rows = pd.concat([normal, anomalous])
    X = RobustScaler().fit_transform(rows.drop(columns=["sample_id", "malignant"]).to_numpy()[:, :10])
    return X, rows.malignant.to_numpy()


def test_registry_has_at_least_ten_detectors_with_tags():
    assert len(REGISTRY) >= 10
    for spec in REGISTRY.values():
        assert set(spec.tags) == {"backend", "input", "gpu", "proba", "python_dependencies"}
    assert {s.name for s in find(backend="sklearn")} == {"sk_iforest", "sk_lof", "sk_ocsvm", "sk_elliptic"}
    with pytest.raises(KeyError, match="unknown detector 'nope'; known: cblof"):
        get("nope")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_detector_contract(name, tiny):
    X, y = tiny
    spec = REGISTRY[name]
    detector = spec.build(spec.test_params, contamination=0.1, random_state=0)

    # __init__ stores parameters only; get_params/set_params/clone round-trip them.
    assert detector.get_params()["params"] == spec.test_params
    assert clone(detector).get_params() == detector.get_params()
    assert detector.set_params(contamination=0.2).contamination == 0.2
    detector.set_params(contamination=0.1)

    assert detector.fit(X) is detector
    assert detector.n_features_in_ == X.shape[1]
    assert detector.decision_scores_.shape == (len(X),)
    assert np.isfinite(detector.decision_scores_).all()
    assert detector.labels_.sum() == pytest.approx(0.1 * len(X), abs=3)

    scores = detector.decision_function(X)
    assert np.isfinite(scores).all()
    # Higher means more anomalous in every backend: the malignant rows rank above the benign ones.
    assert roc_auc_score(y, scores) > 0.6, f"{name} scores point the wrong way"
    assert set(np.unique(detector.predict(X))) <= {0, 1}
    proba = detector.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1) and (proba >= 0).all()
    with pytest.raises(ValueError, match="features"):
        detector.decision_function(X[:, :3])


def test_same_seed_same_scores(tiny):
    X, _ = tiny
    spec = REGISTRY["iforest"]
    first = spec.build({"n_estimators": 30}, 0.1, 7).fit(X).decision_function(X)
    second = spec.build({"n_estimators": 30}, 0.1, 7).fit(X).decision_function(X)
    np.testing.assert_array_equal(first, second)


def test_sklearn_scores_are_negated_once(tiny):
    X, _ = tiny
    detector = SklearnDetector("sk_iforest", {"n_estimators": 25}, random_state=3).fit(X)
    forest = IsolationForest(n_estimators=25, random_state=3).fit(X)
    np.testing.assert_allclose(detector.decision_function(X), -forest.score_samples(X))
