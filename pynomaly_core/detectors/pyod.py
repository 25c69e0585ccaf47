"""PyOD detectors. PyOD already scores "higher = more anomalous", so the adapter only wraps."""

from __future__ import annotations

import importlib
import inspect

from .base import BaseDetector
from .spec import DetectorSpec

# registry name -> (PyOD module, class)
PYOD_MODELS = {
    "iforest": ("pyod.models.iforest", "IForest"),
    "knn": ("pyod.models.knn", "KNN"),
    "lof": ("pyod.models.lof", "LOF"),
    "copod": ("pyod.models.copod", "COPOD"),
    "ecod": ("pyod.models.ecod", "ECOD"),
    "hbos": ("pyod.models.hbos", "HBOS"),
    "pca": ("pyod.models.pca", "PCA"),
    "ocsvm": ("pyod.models.ocsvm", "OCSVM"),
    "cblof": ("pyod.models.cblof", "CBLOF"),
    "loda": ("pyod.models.loda", "LODA"),
    "mcd": ("pyod.models.mcd", "MCD"),
    "gmm": ("pyod.models.gmm", "GMM"),
    "inne": ("pyod.models.inne", "INNE"),
    "kde": ("pyod.models.kde", "KDE"),
}


class PyODDetector(BaseDetector):
    backend = "pyod"
    python_dependencies = ("pyod",)

    def __init__(self, model="iforest", params=None, contamination=0.1, random_state=None):
        self.model = model
        self.params = params
        self.contamination = contamination
        self.random_state = random_state

    def _fit(self, X, y):
        module, name = PYOD_MODELS[self.model]
        cls = getattr(importlib.import_module(module), name)
        kwargs = dict(self.params or {}, contamination=self.contamination)
        if "random_state" in inspect.signature(cls).parameters:
            kwargs["random_state"] = self.random_state
        self.estimator_ = cls(**kwargs).fit(X)
        return self.estimator_.decision_scores_

    def _score(self, X):
        return self.estimator_.decision_function(X)


def _spec(name, search_space, test_params=None):
    return DetectorSpec(name, PyODDetector, name, search_space, test_params or {})


SPECS = [
    _spec("iforest", lambda t: {
        "n_estimators": t.suggest_int("iforest.n_estimators", 50, 300, step=50),
        "max_features": t.suggest_float("iforest.max_features", 0.5, 1.0),
    }, {"n_estimators": 20}),
    _spec("knn", lambda t: {
        "n_neighbors": t.suggest_int("knn.n_neighbors", 3, 50, log=True),
        "method": t.suggest_categorical("knn.method", ["largest", "mean", "median"]),
    }, {"n_neighbors": 3}),
    _spec("lof", lambda t: {"n_neighbors": t.suggest_int("lof.n_neighbors", 5, 60, log=True)}, {"n_neighbors": 10}),
    _spec("copod", lambda t: {}),
    _spec("ecod", lambda t: {}),
    _spec("hbos", lambda t: {
        "n_bins": t.suggest_int("hbos.n_bins", 5, 50),
        "alpha": t.suggest_float("hbos.alpha", 0.05, 0.5),
    }),
    _spec("pca", lambda t: {"whiten": t.suggest_categorical("pca.whiten", [False, True])}),
    _spec("ocsvm", lambda t: {
        "nu": t.suggest_float("ocsvm.nu", 0.01, 0.5, log=True),
        "gamma": t.suggest_float("ocsvm.gamma", 1e-3, 1.0, log=True),
    }),
    _spec("cblof", lambda t: {
        "n_clusters": t.suggest_int("cblof.n_clusters", 4, 16),
        "alpha": t.suggest_float("cblof.alpha", 0.6, 0.95),
    }, {"n_clusters": 3}),
    _spec("loda", lambda t: {
        "n_bins": t.suggest_int("loda.n_bins", 5, 50),
        "n_random_cuts": t.suggest_int("loda.n_random_cuts", 50, 300, step=50),
    }),
    _spec("mcd", lambda t: {"support_fraction": t.suggest_float("mcd.support_fraction", 0.6, 1.0)}),
    _spec("gmm", lambda t: {"n_components": t.suggest_int("gmm.n_components", 1, 8)}, {"n_components": 2}),
    _spec("inne", lambda t: {"n_estimators": t.suggest_int("inne.n_estimators", 50, 300, step=50)}, {"n_estimators": 20}),
    _spec("kde", lambda t: {"bandwidth": t.suggest_float("kde.bandwidth", 0.1, 5.0, log=True)}),
]
