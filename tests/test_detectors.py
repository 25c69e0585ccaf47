"""One generic contract test over every registered detector, on a small slice of real data."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import RobustScaler

import importlib.metadata
import io
import json
import re
from importlib import resources

import joblib

from pynomaly_core.detectors import packages, pyod
from pynomaly_core.detectors.registry import REGISTRY, default_candidates, find, get, semi_supervised_candidates
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
        assert set(spec.tags) == {"backend", "input", "gpu", "proba", "needs_labels", "python_dependencies"}
    assert {s.name for s in find(backend="sklearn")} == {"sk_iforest", "sk_lof", "sk_ocsvm", "sk_elliptic", "pu_logistic"}
    with pytest.raises(KeyError, match="unknown detector 'nope'; known: abod"):
        get("nope")


TABULAR = sorted(spec.name for spec in find(input="tabular"))
DEEP = sorted(spec.name for spec in REGISTRY.values() if spec.tags["backend"] in {"torch", "tensorflow", "jax"} and spec.tags["input"] == "tabular")
# Many training rows share the top score (HDBSCAN's 0 for clustered rows), so fewer than
# `contamination` rows can lie strictly above the threshold.
TIED_SCORES = {"hdbscan"}


def test_default_candidates_are_the_fast_tabular_eighteen():
    assert sorted(default_candidates()) == sorted([
        "iforest", "knn", "lof", "copod", "ecod", "hbos", "pca", "ocsvm", "cblof", "loda", "mcd", "gmm", "inne", "kde",
        "sk_iforest", "sk_lof", "sk_ocsvm", "sk_elliptic",
    ])


def test_every_shipped_pyod_tabular_detector_is_registered_or_excluded_with_a_reason():
    catalogue = json.loads(resources.files("pyod.utils.knowledge").joinpath("algorithms.json").read_text())
    shipped = {k for k, a in catalogue.items() if a["status"] == "shipped" and "tabular" in a["data_types"]}
    assert len(shipped) == 43  # PyOD 3.6.7
    registered = {k for k in shipped if k.lower() in REGISTRY}
    assert registered | set(pyod.EXCLUDED) == shipped and not registered & set(pyod.EXCLUDED)
    for key in registered:
        spec = REGISTRY[key.lower()]
        assert spec.tags["backend"] in {"pyod", "torch"} and spec.tags["input"] == "tabular"
        if "torch" in (catalogue[key]["requires"] or []):
            assert spec.tags["gpu"] and "torch" in spec.tags["python_dependencies"]


@pytest.mark.parametrize("name", [s.name for s in REGISTRY.values() if s.missing_packages])
def test_missing_optional_dependency_says_what_to_install(name, tiny):
    spec = REGISTRY[name]
    X, y = tiny
    missing = spec.missing_packages[0]
    with pytest.raises(ImportError, match=f"detector '{name}' needs the Python package '{missing}'.*{re.escape(packages.install_hint(missing))}"):
        spec.build(spec.test_params).fit(X, y if spec.needs_labels else None)


def test_every_detector_whose_packages_are_installed_is_available():
    # What pip installed, by import name: found independently of the registry's own check.
    installed = importlib.metadata.packages_distributions()
    for spec in REGISTRY.values():
        dependencies = spec.tags["python_dependencies"]
        assert spec.missing_packages == [p for p in dependencies if p not in installed], spec.name
        for package in set(dependencies) & set(installed):  # what the registered model's pip requirements will name
            assert set(packages.distributions(package)) <= {d for p in installed.values() for d in p}, package
    assert semi_supervised_candidates() == ["xgbod", "pu_logistic"]  # `make test` installs every extra


def test_the_models_pip_requirements_name_the_distributions_of_its_detectors():
    from pynomaly_core.stages import TrainResult, _pip_requirements

    ensemble = TrainResult(run_id="r", detector="ensemble", params={"members": ["pu_logistic", "xgbod", "jax_vae"]}, selection_score=0,
                           criterion="roc_auc", study_name="s", n_trials=1, n_pruned=0, n_failed=0, fit_seconds=0)
    names = [r.split("==")[0] for r in _pip_requirements(ensemble)]
    assert {"scikit-learn", "xgboost-cpu", "jax", "jaxlib", "pyod"} <= set(names) and len(names) == len(set(names))
    assert not {"sklearn", "xgboost"} & set(names)


def test_missing_packages_are_named_with_the_extra_or_distribution_that_installs_them():
    assert packages.install_hint("xgboost") == "pip install 'pynomaly[xgbod]'"
    assert packages.install_hint("torch_geometric") == "pip install 'pynomaly[graph]'"
    assert packages.install_hint("sklearn") == "pip install scikit-learn"
    assert packages.install_hint("combo") == "pip install combo"
    error = packages.missing_dependency("xgbod", ModuleNotFoundError("No module named 'xgboost.sklearn'", name="xgboost.sklearn"))
    assert str(error) == "detector 'xgbod' needs the Python package 'xgboost', which is not installed: pip install 'pynomaly[xgbod]'"


def test_every_backend_is_registered_with_its_tags():
    backends = {(s.tags["backend"], s.tags["input"]) for s in REGISTRY.values()}
    assert {("pyod", "tabular"), ("sklearn", "tabular"), ("torch", "tabular"), ("tensorflow", "tabular"), ("jax", "tabular"),
            ("numpy", "series"), ("torch", "series"), ("pyod", "series"), ("pygod", "graph")} <= backends
    assert {"autoencoder", "vae", "deepsvdd", "dagmm", "tf_autoencoder", "tf_vae", "tf_deepsvdd", "jax_autoencoder", "jax_vae",
            "dominant", "gcnae", "anomalydae", "cola", "mp_discord", "lstm_forecast"} <= set(REGISTRY)
    assert all(REGISTRY[n].tags["gpu"] for n in DEEP)


@pytest.mark.parametrize("name", TABULAR)
def test_detector_contract(name, tiny):
    X, y = tiny
    spec = REGISTRY[name]
    if spec.missing_packages:  # a visible skip in the summary, with what to install
        pytest.skip(f"{name} needs {', '.join(spec.missing_packages)}: " + "; ".join(map(packages.install_hint, spec.missing_packages)))
    detector = spec.build(spec.test_params, contamination=0.1, random_state=0)

    # __init__ stores parameters only; get_params/set_params/clone round-trip them.
    assert detector.get_params()["params"] == spec.test_params
    assert clone(detector).get_params() == detector.get_params()
    assert detector.set_params(contamination=0.2).contamination == 0.2
    detector.set_params(contamination=0.1)

    # Semi-supervised detectors are fitted with the labels; the others never see them.
    assert detector.fit(X, y if spec.needs_labels else None) is detector
    assert detector.n_features_in_ == X.shape[1]
    assert detector.decision_scores_.shape == (len(X),)
    assert np.isfinite(detector.decision_scores_).all()
    if name not in TIED_SCORES:
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


@pytest.mark.parametrize("name, floor", [("kpca", 0.9), ("hdbscan", 0.6)])
def test_detectors_once_inverted_on_breastw_rank_its_anomalies_first(name, floor):
    from pynomaly_core.selection.bench import adbench_split
    from tests.conftest import ADBENCH

    data = np.load(ADBENCH / "breastw.npz")
    X_train, X_test, _, y_test = adbench_split(data["X"].astype(float), data["y"].astype(int), seed=1)
    detector = REGISTRY[name].build({}, 0.1, 0).fit(X_train)
    assert roc_auc_score(y_test, detector.decision_function(X_test)) > floor  # kpca 0.95 (0.49 with PyOD's all components), hdbscan 0.65


def test_same_seed_same_scores(tiny):
    X, _ = tiny
    spec = REGISTRY["iforest"]
    first = spec.build({"n_estimators": 30}, 0.1, 7).fit(X).decision_function(X)
    second = spec.build({"n_estimators": 30}, 0.1, 7).fit(X).decision_function(X)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("max_features", [1.0, 0.6])
def test_iforest_scores_the_forests_trees_exactly_as_pyod_does(max_features, tiny):
    X, _ = tiny
    detector = REGISTRY["iforest"].build({"n_estimators": 40, "max_features": max_features}, 0.1, 5).fit(X)
    rows = np.vstack([X[:1], X * 3.0])  # one row, and rows far out
    np.testing.assert_array_equal(detector.decision_function(rows), detector.estimator_.decision_function(rows))


def test_sklearn_scores_are_negated_once(tiny):
    X, _ = tiny
    detector = SklearnDetector("sk_iforest", {"n_estimators": 25}, random_state=3).fit(X)
    forest = IsolationForest(n_estimators=25, random_state=3).fit(X)
    np.testing.assert_allclose(detector.decision_function(X), -forest.score_samples(X))


@pytest.mark.parametrize("name", DEEP)
def test_deep_detectors_are_seeded_and_pickle_exactly(name, tiny):
    X, _ = tiny
    spec = REGISTRY[name]
    first = spec.build(spec.test_params, 0.1, 5).fit(X)
    second = spec.build(spec.test_params, 0.1, 5).fit(X)
    np.testing.assert_array_equal(first.decision_function(X), second.decision_function(X))
    buffer = io.BytesIO()
    joblib.dump(first, buffer)
    buffer.seek(0)
    np.testing.assert_allclose(joblib.load(buffer).decision_function(X), first.decision_function(X), atol=1e-6, rtol=0)


def test_device_auto_picks_the_gpu_only_when_there_is_one():
    import torch

    from pynomaly_core.detectors.torch import torch_device

    assert torch_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_device("cpu") == "cpu"


def test_semi_supervised_detector_is_tagged_and_refuses_to_fit_without_labels(tiny):
    X, y = tiny
    assert [s.name for s in find(needs_labels=True)] == ["xgbod", "pu_logistic"]
    assert not {"xgbod", "pu_logistic"} & set(default_candidates()) and "xgboost" in REGISTRY["xgbod"].tags["python_dependencies"]
    for spec in (REGISTRY["xgbod"], REGISTRY["pu_logistic"]):
        for labels in (None, np.zeros_like(y)):
            with pytest.raises(ValueError, match=f"detector '{spec.name}' is semi-supervised: fit it with labels holding at least one anomaly"):
                spec.build(spec.test_params).fit(X, labels)
    with pytest.raises(ValueError, match="needs unlabelled rows besides the labelled anomalies"):
        REGISTRY["pu_logistic"].build().fit(X, np.ones_like(y))


def test_positive_unlabelled_logistic_ranks_the_hidden_anomalies_from_a_few_labelled_ones(tiny):
    X, y = tiny
    known = np.zeros_like(y)
    known[np.flatnonzero(y == 1)[:3]] = 1  # three of the ten anomalies labelled, the rest unlabelled
    detector = REGISTRY["pu_logistic"].build().fit(X, known)
    hidden = known == 0
    assert roc_auc_score(y[hidden], detector.decision_function(X[hidden])) > 0.8  # 0.87 measured
