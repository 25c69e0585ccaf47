"""scikit-learn outlier detectors. Their `score_samples` is "higher = more normal": negated once, here."""

from __future__ import annotations

import importlib
import inspect

import numpy as np

from .base import ModelDetector
from .reference import REFERENCE_ROWS, fit_on_sample
from .spec import DetectorSpec

SKLEARN_MODELS = {
    "sk_iforest": ("sklearn.ensemble", "IsolationForest"),
    "sk_lof": ("sklearn.neighbors", "LocalOutlierFactor"),
    "sk_ocsvm": ("sklearn.svm", "OneClassSVM"),
    "sk_elliptic": ("sklearn.covariance", "EllipticEnvelope"),
}


# Fitted on a bounded sample of the training rows (reference.py).
REFERENCE_MODELS = {"sk_lof", "sk_ocsvm"}


class SklearnDetector(ModelDetector):
    backend = "sklearn"
    python_dependencies = ("sklearn",)

    def _fit(self, X, y):
        module, name = SKLEARN_MODELS[self.model]
        cls = getattr(importlib.import_module(module), name)
        kwargs = dict(self.params or {})
        limit = kwargs.pop("reference_rows", REFERENCE_ROWS) if self.model in REFERENCE_MODELS else None
        accepted = inspect.signature(cls).parameters
        if "random_state" in accepted:
            kwargs["random_state"] = self.random_state
        if "novelty" in accepted:  # LOF scores new rows only in novelty mode
            kwargs["novelty"] = True
        self.estimator_ = cls(**kwargs)

        def training_scores(rows):
            if hasattr(self.estimator_, "negative_outlier_factor_"):  # LOF's training scores exclude each row itself
                return -self.estimator_.negative_outlier_factor_
            return -self.estimator_.score_samples(rows)

        return fit_on_sample(self.estimator_.fit, training_scores, self._score, X, limit, self.random_state)

    def _score(self, X):
        return -self.estimator_.score_samples(X)


class PositiveUnlabelledLogistic(ModelDetector):
    """A logistic regression of the labelled anomalies against every other row, classes balanced.

    When the labelled anomalies are a random pick of all anomalies, a classifier of labelled
    against unlabelled rows ranks rows as one of anomalies against normal rows would (Elkan &
    Noto 2008). Alone it ignores what the data's shape says; in few-label meta-selection it is
    averaged half and half with the label-free rank ensemble (`selection.label_guided_spec`).
    """

    backend = "sklearn"
    python_dependencies = ("sklearn",)
    needs_labels = True

    def _fit(self, X, y):
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y)
        if np.all(y == 1):
            raise ValueError(f"detector '{self.model}' needs unlabelled rows besides the labelled anomalies: every row is labelled 1")
        self.estimator_ = LogisticRegression(class_weight="balanced", max_iter=1000, **(self.params or {})).fit(X, y)
        return self.estimator_.decision_function(X)

    def _score(self, X):
        return self.estimator_.decision_function(X)


def _spec(name, search_space, test_params=None):
    return DetectorSpec(name, SklearnDetector, name, search_space, test_params or {}, default=True)


SPECS = [
    _spec("sk_iforest", lambda t: {
        "n_estimators": t.suggest_int("sk_iforest.n_estimators", 50, 300, step=50),
        "max_samples": t.suggest_float("sk_iforest.max_samples", 0.1, 1.0),
    }, {"n_estimators": 20}),
    _spec("sk_lof", lambda t: {"n_neighbors": t.suggest_int("sk_lof.n_neighbors", 5, 60, log=True)}, {"n_neighbors": 10}),
    _spec("sk_ocsvm", lambda t: {
        "nu": t.suggest_float("sk_ocsvm.nu", 0.01, 0.5, log=True),
        "gamma": t.suggest_float("sk_ocsvm.gamma", 1e-3, 1.0, log=True),
    }),
    _spec("sk_elliptic", lambda t: {"support_fraction": t.suggest_float("sk_elliptic.support_fraction", 0.6, 1.0)}),
    DetectorSpec("pu_logistic", PositiveUnlabelledLogistic, "pu_logistic", lambda t: {"C": t.suggest_float("pu_logistic.C", 0.01, 100.0, log=True)}),
]
