"""Preprocessing, the Optuna selection and the metrics, on the real demo data."""

import numpy as np
import optuna
import pandas as pd
import pytest

from pynomaly_core.config import PreprocessConfig, TrainConfig
from pynomaly_core.detectors import registry
from pynomaly_core.detectors.ensemble import RankEnsemble
from pynomaly_core.evaluation import metrics
from pynomaly_core.preprocessing import build_preprocessor, features, split
from pynomaly_core.tuning import select_detector, train_detector
from tests.conftest import ROOT, demo_config


@pytest.fixture(scope="module")
def demo_xy():
    config = demo_config()
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    train, _ = split(frame, config.data, config.preprocess, seed=0)
    X = build_preprocessor(config.data, config.preprocess).fit_transform(features(train, config.data))
    return X, train["malignant"].to_numpy()


def _select(X, y=None, **overrides):
    options = dict(
        candidates={name: registry.get(name) for name in ["iforest", "knn", "copod", "hbos", "pca", "sk_lof"]},
        n_trials=6, timeout=None, n_folds=3, contamination=0.1, seed=1, metric="roc_auc",
        pruning=True, storage="sqlite:///:memory:", study_name="s",
    )
    return select_detector(X, y, **{**options, **overrides})


def test_preprocessor_is_fitted_on_training_rows_only():
    config = demo_config()
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    train, test = split(frame, config.data, config.preprocess, seed=0)
    assert len(test) == round(0.3 * len(frame)) and train["malignant"].mean() == pytest.approx(frame["malignant"].mean(), abs=0.01)
    scaler = build_preprocessor(config.data, config.preprocess).fit(features(train, config.data)).named_transformers_["numeric"][-1]
    columns = list(config.data.columns)
    np.testing.assert_allclose(scaler.center_, train[columns].median())
    assert not np.allclose(scaler.center_, frame[columns].median())


def test_categorical_columns_are_imputed_and_one_hot_encoded():
    config = demo_config()
    data = config.data.model_copy(update={"columns": {
        "size": type(config.data.columns["mean_radius"])(type="str", nullable=True),
        "weight": config.data.columns["mean_radius"],
    }})
    frame = pd.DataFrame({"size": ["S", "M", None, "S"], "weight": [1.0, None, 3.0, 4.0]})
    transformer = build_preprocessor(data, PreprocessConfig(scaler="minmax")).fit(features(frame, data))
    assert list(transformer.get_feature_names_out()) == ["weight", "size_M", "size_S"]
    unseen = transformer.transform(features(pd.DataFrame({"size": ["XL"], "weight": [2.0]}), data))
    assert unseen.tolist() == [[1 / 3, 0.0, 0.0]]


def test_label_free_selection_is_seeded_and_reproducible(demo_xy):
    X, _ = demo_xy
    first, second = _select(X), _select(X)
    assert first.criterion == "consensus_spearman"
    assert (first.detector, first.params, first.score) == (second.detector, second.params, second.score)
    assert -1 <= first.score <= 1 and first.n_trials == 6


def test_selection_never_sees_labels_unless_asked(demo_xy, monkeypatch):
    X, y = demo_xy
    import pynomaly_core.tuning as tuning

    seen = []
    monkeypatch.setattr(tuning, "roc_auc_score", lambda labels, scores: seen.append(labels) or 0.5)
    monkeypatch.setitem(tuning.LABEL_METRICS, "roc_auc", tuning.roc_auc_score)
    _select(X)
    assert seen == []
    selection = _select(X, y)
    assert selection.criterion == "roc_auc" and len(seen) > 0


def test_labelled_selection_finds_a_good_detector(demo_xy):
    X, y = demo_xy
    selection = _select(X, y, n_trials=8)
    assert selection.score > 0.85  # cross-validated ROC-AUC on held-out folds


def test_interrupted_study_resumes(demo_xy, tmp_path):
    X, _ = demo_xy
    storage = f"sqlite:///{tmp_path}/optuna.db"

    def stop_after_three(study, trial):
        if trial.number == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _select(X, storage=storage, callbacks=[stop_after_three])
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
    resumed = _select(X, storage=storage)
    assert resumed.n_trials == 6
    assert [t.number for t in optuna.load_study(study_name="s", storage=storage).trials] == list(range(6))


def test_metrics_on_known_scores():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8])
    labels = np.array([0, 0, 0, 0, 1, 1])
    result = metrics(scores, threshold=0.35, labels=labels)
    assert result["roc_auc"] == 1.0 and result["precision_at_n"] == 1.0
    assert result["false_positive_rate"] == 0.25 and result["recall"] == 1.0
    assert result["alert_rate"] == pytest.approx(0.5) and result["f1"] == pytest.approx(0.8)
    assert set(metrics(scores, 0.35, None)) == {"alert_rate", "threshold", "n_rows"}


def test_meta_selection_ranks_and_ensembles_without_labels(demo_xy):
    X, y = demo_xy
    detector, selection = train_detector(X, None, TrainConfig(), seed=0, study_name="unused")
    assert isinstance(detector, RankEnsemble) and len(selection.params["members"]) == 3
    assert selection.criterion == "meta_predicted_aucroc" and 0.5 < selection.score <= 1
    assert set(selection.params["members"]) <= set(registry.REGISTRY)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, detector.decision_scores_) > 0.85  # the labels only grade the choice


def test_meta_selection_with_few_labels_tries_the_top_candidates_and_the_ensemble(demo_xy, tmp_path):
    X, y = demo_xy
    known = np.zeros_like(y)
    known[np.flatnonzero(y == 1)[:2]] = 1  # two labelled anomalies, every other row unknown
    train = TrainConfig(use_labels=True, meta_candidates=4, storage=f"sqlite:///{tmp_path}/o.db", progress_bar=False)
    _, selection = train_detector(X, known, train, seed=0, study_name="few")
    assert selection.n_trials == 5 and selection.criterion == "roc_auc"
