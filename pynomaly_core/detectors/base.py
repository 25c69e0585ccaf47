"""The detector contract, after scikit-learn's estimator rules and PyOD's BaseDetector.

- `__init__` stores hyper-parameters only; `get_params`/`set_params` come from BaseEstimator.
- `fit` sets `decision_scores_`, `threshold_`, `labels_`, `n_features_in_` and returns self.
  `decision_scores_` and `labels_` (one entry per training row) are left out of a pickle, so a saved
  model's size does not grow with the training rows; `score_distribution_` (a bounded table of the
  training scores) is what `predict_proba` and ensembles read.
- `decision_function`: higher means more anomalous, in every backend.
- `threshold_` is set once, here, from `contamination`; `calibrate` replaces it by a conformal
  threshold for a target false-positive rate.
- `needs_labels` detectors (semi-supervised) get the known labels in `fit`; the others never do.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_array, check_is_fitted

from .ecdf import EmpiricalDistribution

# A detector that cannot fit the data raises one of these (a degenerate fit, a singular covariance).
FIT_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError)
# Set by `fit` for the rows it saw; not pickled (see the module docstring).
TRAINING_ROW_ATTRIBUTES = ("decision_scores_", "labels_")


def conformal_threshold(calibration_scores: np.ndarray, target_fpr: float) -> float:
    """Split-conformal threshold: the ceil((n+1)(1-target_fpr))-th smallest of n calibration scores.

    A normal row exchangeable with normal calibration rows scores above it with probability at
    most `target_fpr` (Vovk et al. 2005; Bates et al. 2023 for outlier detection).
    """
    scores = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    n = len(scores)
    rank = math.ceil(round((n + 1) * (1 - target_fpr), 9))  # round: (n+1)(1-a) = 19.000000000000004 must give 19
    if rank > n:
        raise ValueError(
            f"{n} calibration rows cannot bound the false-positive rate at {target_fpr}: "
            f"at least {math.ceil(round(1 / target_fpr - 1, 9))} are needed; raise threshold.calibration_share"
        )
    return float(scores[rank - 1])


class BaseDetector(OutlierMixin, BaseEstimator):
    # Capability tags, read by the registry and `pynomaly detectors`.
    backend: ClassVar[str] = ""
    input: ClassVar[str] = "tabular"
    python_dependencies: ClassVar[tuple[str, ...]] = ()
    gpu: ClassVar[bool] = False
    proba: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False

    contamination: float

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        """Fit the wrapped model; return the training rows' outlier scores (higher = more anomalous)."""
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, X, y=None):
        X = check_array(X, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        self.decision_scores_ = np.asarray(self._fit(X, y), dtype=np.float64)
        self.threshold_ = float(np.quantile(self.decision_scores_, 1.0 - self.contamination))
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        self.score_distribution_ = EmpiricalDistribution(self.decision_scores_)
        return self

    def __getstate__(self):
        state = super().__getstate__()
        return {key: value for key, value in state.items() if key not in TRAINING_ROW_ATTRIBUTES}

    def calibrate(self, X, target_fpr: float):
        """Set `threshold_` from held-aside rows `X` (never fitted on) for a false-positive rate of `target_fpr`."""
        self.threshold_ = conformal_threshold(self.decision_function(X), target_fpr)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "threshold_")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but the detector was fitted with {self.n_features_in_}")
        return np.asarray(self._score(X), dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > self.threshold_).astype(int)

    def predict_proba(self, X) -> np.ndarray:
        """Calibrated on the training scores: P(anomaly) is the share of training rows scoring lower."""
        anomalous = self.score_distribution_.share_le(self.decision_function(X))
        return np.column_stack([1.0 - anomalous, anomalous])


class ModelDetector(BaseDetector):
    """A detector wrapping one model, chosen by name, with its hyper-parameters in `params`."""

    def __init__(self, model="", params=None, contamination=0.1, random_state=None):
        self.model = model
        self.params = params
        self.contamination = contamination
        self.random_state = random_state

    def fit(self, X, y=None):
        if self.needs_labels and (y is None or not np.any(np.asarray(y) == 1)):
            raise ValueError(f"detector '{self.model}' is semi-supervised: fit it with labels holding at least one anomaly (train.use_labels)")
        return super().fit(X, y)
