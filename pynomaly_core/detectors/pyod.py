"""PyOD detectors. PyOD already scores "higher = more anomalous", so the adapter only wraps.

The list is generated from PyOD's own catalogue (`pyod/utils/knowledge/algorithms.json`):
every detector it marks `shipped` for tabular data is registered under its lower-cased class
name, except the few in `EXCLUDED`. The deep (PyTorch) ones are registered by `torch.py`.
XGBOD is semi-supervised: it is fitted with the known labels and is a candidate only when the
search uses labels. ECOD and COPOD are PyOD's, computed from fit-time tables (`ecod.py`).

A served row's cost and a saved model's size do not grow with the training rows: KNN, LOF, KDE
and OCSVM fit on a bounded seeded sample (`reference.py`), and PyOD's per-training-row
attributes are emptied after the fit.
"""

from __future__ import annotations

import importlib
import inspect
import json
import warnings
from functools import cache
from importlib import resources

import numpy as np

from .base import ModelDetector
from .ecod import ECDFDetector
from .packages import missing_dependency
from .reference import REFERENCE_ROWS, fit_on_sample
from .spec import DetectorSpec

# Not registered, and why (measured with PyOD 3.6.7).
EXCLUDED = {
    "DevNet": "semi-supervised deep model: fit needs labels; XGBOD is the semi-supervised detector registered",
    "MAD": "univariate only (one feature); see the series detectors",
    "LOCI": "a row's score is MDEF/sigma at the last radius PyOD examines, not the largest (AUCROC 0.47 on the contract test's rows, "
            "0.84 with the largest; 0.17 on breastw); new rows are scored against each other, not against the training rows",
    "RGraph": "inverted: rows are not scaled to unit length as the method assumes, so the outliers collect the random walk "
              "(AUCROC 0.17 on the contract test's rows, 0.73 with unit rows; 0.05 on breastw); its active-support solver fails "
              "on some inputs (WBC), and scoring re-solves the whole training graph per 10 new rows",
}


@cache
def catalogue() -> dict[str, dict]:
    """PyOD's shipped tabular detectors: registry name -> {class_path, requires}."""
    algorithms = json.loads(resources.files("pyod.utils.knowledge").joinpath("algorithms.json").read_text())
    return {
        key.lower(): {"class_path": algo["class_path"], "requires": tuple(algo.get("requires") or ())}
        for key, algo in algorithms.items()
        if algo.get("status") == "shipped" and "tabular" in algo.get("data_types", ()) and key not in EXCLUDED
    }


def pyod_class(model: str):
    module, name = catalogue()[model]["class_path"].rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        raise missing_dependency(model, err) from None


def _lof_pool(params):
    """LSCP needs a list of base detectors; a pool of LOFs over neighbourhood sizes, as in PyOD's example."""
    from pyod.models.lof import LOF

    sizes = params.pop("n_neighbors_list", [5, 10, 20, 40])
    return {"detector_list": [LOF(n_neighbors=k) for k in sizes]}


def _xgbod_representation(params, random_state):
    """XGBOD's unsupervised features: KNN, LOF, HBOS and IForest scores at a few sizes each.

    PyOD's default list adds 11 one-class SVMs, whose fits are quadratic in the rows.
    """
    from pyod.models.hbos import HBOS
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF

    sizes = params.pop("n_neighbors_list", [5, 10, 20, 40])
    bins = params.pop("n_bins_list", [10, 20, 30])
    detectors = [KNN(n_neighbors=k) for k in sizes] + [LOF(n_neighbors=k) for k in sizes]
    standardized = [True] * len(detectors)  # distance-based: XGBOD standardises their input
    detectors += [HBOS(n_bins=b) for b in bins] + [IForest(random_state=random_state)]
    return {"estimator_list": detectors, "standardization_flag_list": standardized + [False] * (len(bins) + 1)}


# Models whose constructor needs arguments built from the data or from plain hyper-parameters.
BUILD_ARGS = {
    # PyOD keeps every kernel component by default: a training row then reconstructs exactly and its
    # score is rounding noise (AUCROC 0.05 on ADBench breastw, 0.96 with 5 components).
    "kpca": lambda params, X, seed: {"n_selected_components": min(5, params.get("n_components") or len(X))},
    "lscp": lambda params, X, seed: _lof_pool(params),
    "deepsvdd": lambda params, X, seed: {"n_features": X.shape[1]},
    "xgbod": lambda params, X, seed: _xgbod_representation(params, seed),
}


REFERENCE_MODELS = {"knn", "lof", "kde", "ocsvm"}  # fitted on a bounded sample (reference.py)
# PyOD models whose `decision_function` reads the training scores: they keep `decision_scores_`.
READS_TRAINING_SCORES = {"hdbscan", "qmcd"}


class PyODDetector(ModelDetector):
    backend = "pyod"
    python_dependencies = ("pyod",)

    def _kwargs(self, cls, X) -> dict:
        params = dict(self.params or {})
        params.pop("reference_rows", None)
        built = BUILD_ARGS[self.model](params, X, self.random_state) if self.model in BUILD_ARGS else {}  # may consume params
        kwargs = {**built, **params}
        accepted = inspect.signature(cls).parameters
        if "contamination" in accepted:  # XGBOD has none: it would reach XGBoost as an unknown parameter
            kwargs["contamination"] = self.contamination
        if "random_state" in accepted:
            kwargs["random_state"] = self.random_state
        if "verbose" in accepted and "verbose" not in kwargs:
            kwargs["verbose"] = 0
        return kwargs

    def _fit(self, X, y):
        cls = pyod_class(self.model)
        limit = (self.params or {}).get("reference_rows", REFERENCE_ROWS) if self.model in REFERENCE_MODELS else None
        self.estimator_ = cls(**self._kwargs(cls, X))
        scores = fit_on_sample(self.estimator_.fit, lambda rows: self.estimator_.decision_scores_, self.estimator_.decision_function,
                               X, limit, self.random_state)
        self._drop_training_rows()
        return scores

    def _drop_training_rows(self) -> None:
        """Empties PyOD's per-training-row attributes: its `decision_function` only checks that they
        exist (`check_is_fitted`), its own `predict_proba` and `fit_predict`, not called here, read them."""
        self.estimator_.labels_ = np.empty(0, dtype=int)
        if self.model not in READS_TRAINING_SCORES:
            self.estimator_.decision_scores_ = np.empty(0)

    def _score(self, X):
        if self.model == "iforest":
            return isolation_forest_scores(self.estimator_.detector_, X)
        if self.model == "hbos" and not isinstance(self.estimator_.n_bins, str):
            return histogram_scores(self.estimator_, X)
        return self.estimator_.decision_function(X)


def isolation_forest_scores(forest, X) -> np.ndarray:
    """PyOD IForest's `decision_function` (scikit-learn's, negated), the same to the bit, without the
    per-tree dispatch of scikit-learn's `score_samples` through joblib: ~45 µs a tree whatever the
    rows, so 7 of the 8 ms that one served row cost with 150 trees. Uses the fitted forest's own path
    lengths; tests.test_detectors pins it to PyOD's result on the installed scikit-learn."""
    from sklearn.ensemble._iforest import _average_path_length

    X = np.asarray(X, dtype=np.float32)  # scikit-learn's trees split on float32
    subsample = forest._max_features != X.shape[1]
    depths = np.zeros(len(X))
    for tree, columns, path_lengths, average_lengths in zip(
        forest.estimators_, forest.estimators_features_, forest._decision_path_lengths, forest._average_path_length_per_tree
    ):
        leaves = tree.tree_.apply(X[:, columns] if subsample else X)
        depths += path_lengths[leaves] + average_lengths[leaves] - 1.0
    denominator = len(forest.estimators_) * _average_path_length([forest._max_samples])
    # A forest of one training row has denominator 0: scikit-learn sets the score to 1 then.
    return 2 ** -np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0) + forest.offset_


def histogram_scores(hbos, X) -> np.ndarray:
    """PyOD HBOS's `decision_function` (fixed `n_bins`), the same to the bit, in numpy: PyOD's is a
    numba function compiled at its first call in each process and again for each new array layout,
    15 s for a served model's first request on this machine. A value outside the histogram scores
    as its edge bin when within `tol` bin widths of it, else as the least dense bin, as in PyOD;
    tests.test_serving_cost pins it to PyOD's result."""
    n_bins, scores = hbos.n_bins, np.zeros(X.shape)
    for i in range(X.shape[1]):
        edges, values = hbos.bin_edges_[:, i], X[:, i]
        log_density = np.log2(hbos.hist_[:, i] + hbos.alpha)
        bins = np.digitize(values, edges, right=True)
        below, above = bins == 0, bins == n_bins + 1
        scores[:, i] = log_density[np.clip(bins - 1, 0, n_bins - 1)]
        near_low = edges[0] - values <= (edges[1] - edges[0]) * hbos.tol
        near_high = values - edges[-1] <= (edges[-1] - edges[-2]) * hbos.tol
        scores[below & ~near_low, i] = scores[above & ~near_high, i] = np.min(log_density)
    return -np.sum(scores, axis=1)  # PyOD's invert_order


class PyODSemiSupervisedDetector(PyODDetector):
    """XGBOD: fitted on the rows and their known labels (1 = labelled anomaly, 0 = the rest).

    In few-label mode the 0s are unlabelled rows, hidden anomalies among them (positive-unlabelled).
    """

    needs_labels = True

    def _fit(self, X, y):
        cls = pyod_class(self.model)
        with warnings.catch_warnings():
            # PyOD warns whenever y reaches its base class, and XGBOD passes XGBoost 1.x's `silent`.
            warnings.filterwarnings("ignore", message="y should not be presented")
            warnings.filterwarnings("ignore", message=r'[\s\S]*Parameters: \{ "silent" \} are not used')
            self.estimator_ = cls(**self._kwargs(cls, X)).fit(X, y)
        scores = self.estimator_.decision_scores_
        self._drop_training_rows()
        return scores


# The fast detectors searched by default (`train.detectors: all`), with hand-set spaces.
SEARCH_SPACES = {
    "iforest": lambda t: {
        "n_estimators": t.suggest_int("iforest.n_estimators", 50, 300, step=50),
        "max_features": t.suggest_float("iforest.max_features", 0.5, 1.0),
    },
    "knn": lambda t: {
        "n_neighbors": t.suggest_int("knn.n_neighbors", 3, 50, log=True),
        "method": t.suggest_categorical("knn.method", ["largest", "mean", "median"]),
    },
    "lof": lambda t: {"n_neighbors": t.suggest_int("lof.n_neighbors", 5, 60, log=True)},
    "copod": lambda t: {},
    "ecod": lambda t: {},
    "hbos": lambda t: {"n_bins": t.suggest_int("hbos.n_bins", 5, 50), "alpha": t.suggest_float("hbos.alpha", 0.05, 0.5)},
    "pca": lambda t: {"whiten": t.suggest_categorical("pca.whiten", [False, True])},
    "ocsvm": lambda t: {
        "nu": t.suggest_float("ocsvm.nu", 0.01, 0.5, log=True),
        "gamma": t.suggest_float("ocsvm.gamma", 1e-3, 1.0, log=True),
    },
    "cblof": lambda t: {"n_clusters": t.suggest_int("cblof.n_clusters", 4, 16), "alpha": t.suggest_float("cblof.alpha", 0.6, 0.95)},
    "loda": lambda t: {
        "n_bins": t.suggest_int("loda.n_bins", 5, 50),
        "n_random_cuts": t.suggest_int("loda.n_random_cuts", 50, 300, step=50),
    },
    "mcd": lambda t: {"support_fraction": t.suggest_float("mcd.support_fraction", 0.6, 1.0)},
    "gmm": lambda t: {"n_components": t.suggest_int("gmm.n_components", 1, 8)},
    "inne": lambda t: {"n_estimators": t.suggest_int("inne.n_estimators", 50, 300, step=50)},
    "kde": lambda t: {"bandwidth": t.suggest_float("kde.bandwidth", 0.1, 5.0, log=True)},
}
DEFAULT = set(SEARCH_SPACES)

# The rest of PyOD's tabular catalogue: slower (quadratic or worse) or needing extra packages.
SEARCH_SPACES |= {
    "abod": lambda t: {"n_neighbors": t.suggest_int("abod.n_neighbors", 5, 30)},
    "sos": lambda t: {"perplexity": t.suggest_float("sos.perplexity", 2.0, 50.0, log=True)},
    "qmcd": lambda t: {},
    "sampling": lambda t: {"subset_size": t.suggest_int("sampling.subset_size", 10, 100, log=True)},
    "kpca": lambda t: {
        "kernel": t.suggest_categorical("kpca.kernel", ["rbf", "poly", "cosine"]),
        "n_selected_components": t.suggest_int("kpca.n_selected_components", 2, 20, log=True),
    },
    "cd": lambda t: {},
    "lmdd": lambda t: {"dis_measure": t.suggest_categorical("lmdd.dis_measure", ["aad", "var", "iqr"])},
    "cof": lambda t: {"n_neighbors": t.suggest_int("cof.n_neighbors", 5, 50, log=True)},
    "hdbscan": lambda t: {"min_cluster_size": t.suggest_int("hdbscan.min_cluster_size", 5, 50, log=True)},
    "sod": lambda t: {"n_neighbors": t.suggest_int("sod.n_neighbors", 10, 40), "ref_set": t.suggest_int("sod.ref_set", 5, 9)},
    "rod": lambda t: {},
    "featurebagging": lambda t: {"n_estimators": t.suggest_int("featurebagging.n_estimators", 5, 30)},
    "lscp": lambda t: {"local_region_size": t.suggest_int("lscp.local_region_size", 10, 50)},
    "suod": lambda t: {},
    "xgbod": lambda t: {
        "n_estimators": t.suggest_int("xgbod.n_estimators", 50, 300, step=50),
        "max_depth": t.suggest_int("xgbod.max_depth", 2, 6),
        "learning_rate": t.suggest_float("xgbod.learning_rate", 0.01, 0.3, log=True),
    },
}

# PyOD's catalogue omits that SUOD imports `combo` too.
DEPENDENCIES = {"suod": ("combo", "suod")}

# Small settings for the contract test on 100 rows.
TEST_PARAMS = {
    "iforest": {"n_estimators": 20},
    "knn": {"n_neighbors": 3},
    "lof": {"n_neighbors": 10},
    "cblof": {"n_clusters": 3},
    "gmm": {"n_components": 2},
    "inne": {"n_estimators": 20},
    "sod": {"n_neighbors": 10, "ref_set": 5},
    "featurebagging": {"n_estimators": 5},
    "lscp": {"n_neighbors_list": [5, 10, 20]},
    "sos": {"perplexity": 30.0},
    "xgbod": {"n_estimators": 20, "n_neighbors_list": [5, 10], "n_bins_list": [10]},
}


def _spec(name: str, estimator=PyODDetector, default: bool | None = None, spaces=SEARCH_SPACES, test_params=TEST_PARAMS) -> DetectorSpec:
    entry = catalogue()[name]
    return DetectorSpec(
        name, estimator, name, spaces[name], test_params.get(name, {}),
        default=name in DEFAULT if default is None else default,
        dependencies=DEPENDENCIES.get(name, tuple(p for p in entry["requires"] if p != "torch")),
    )


# PyTorch models (PyOD marks them `requires: torch`; DIF imports torch too) live in torch.py.
TORCH_MODELS = {name for name, entry in catalogue().items() if "torch" in entry["requires"]} | {"dif"}
SEMI_SUPERVISED = {"xgbod"}
TABLE_MODELS = {"ecod", "copod"}
SPECS = [
    _spec(name, PyODSemiSupervisedDetector if name in SEMI_SUPERVISED else ECDFDetector if name in TABLE_MODELS else PyODDetector)
    for name in catalogue() if name not in TORCH_MODELS
]
