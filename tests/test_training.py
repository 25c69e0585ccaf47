"""Preprocessing, the Optuna selection and the metrics, on the real demo data."""

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from pynomaly_core.selection import metaselect
from pynomaly_core.config import PreprocessConfig, TrainConfig
from pynomaly_core.detectors import registry
from pynomaly_core.detectors.ensemble import RankEnsemble
from pynomaly_core.detectors.spec import model_name
from pynomaly_core.evaluation.metrics import metrics
from pynomaly_core.data.preprocessing import build_preprocessor, features, split
from pynomaly_core.selection.consensus import ConsensusSearch
from pynomaly_core.selection.base import label_guided_spec
from pynomaly_core.selection import make_selector
from tests.conftest import ROOT, demo_config


@pytest.fixture(scope="module")
def demo_xy():
    config = demo_config()
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    train, _ = split(frame, config.data, config.preprocess, seed=0)
    X = build_preprocessor(config.data, config.preprocess).fit_transform(features(train, config.data))
    return X, train["malignant"].to_numpy()


def _select(X, y=None, detectors=("iforest", "knn", "copod", "hbos", "pca", "sk_lof"), callbacks=(), **overrides):
    """The consensus search's choice, without the final fit."""
    settings = dict(n_trials=6, cv_folds=3, ensemble_size=1, storage="sqlite:///:memory:", progress_bar=False) | overrides
    train = TrainConfig(strategy="consensus", detectors=list(detectors), use_labels=y is not None, **settings)
    return ConsensusSearch(train, seed=1, study_name="s", callbacks=callbacks).choose(X, y)[0]


def train_detector(X, y, train, seed, study_name):
    selection = make_selector(train, seed=seed, study_name=study_name).select(X, y)
    return selection.model, selection


def test_preprocessor_is_fitted_on_training_rows_only():
    config = demo_config()
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    train, test = split(frame, config.data, config.preprocess, seed=0)
    assert len(test) == round(0.3 * len(frame)) and train["malignant"].mean() == pytest.approx(frame["malignant"].mean(), abs=0.01)
    scaler = build_preprocessor(config.data, config.preprocess).fit(features(train, config.data)).named_transformers_["numeric"][-1]
    columns = list(config.data.columns)
    np.testing.assert_allclose(scaler.center_, train[columns].median())
    assert not np.allclose(scaler.center_, frame[columns].median())


def test_preprocess_stage_fits_the_transformer_on_a_seeded_sample_of_a_large_training_set(workdir):
    # preprocess.fit_rows bounds the rows the imputer and scaler see (memory on a large table); the split is the
    # one scikit-learn makes of the frame itself.
    import joblib
    from sklearn.model_selection import train_test_split

    from pynomaly_core import stages

    config = demo_config()
    stages.validate(config)
    validated = pd.read_parquet(config.paths.validated)
    config = config.model_copy(update={"preprocess": config.preprocess.model_copy(update={"fit_rows": 50})})
    stages.preprocess(config)
    train, test = (pd.read_parquet(path) for path in (config.paths.train, config.paths.test))
    expected = train_test_split(validated, test_size=0.3, random_state=config.seed, stratify=validated["malignant"])
    for part, want in zip((train, test), expected):
        pd.testing.assert_frame_equal(part, want.reset_index(drop=True))
    columns = list(config.data.columns)
    scaler = joblib.load(config.paths.preprocessor).named_transformers_["numeric"][-1]
    np.testing.assert_allclose(scaler.center_, train.sample(50, random_state=config.seed)[columns].median())
    assert not np.allclose(scaler.center_, train[columns].median())


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
    # Spearman with the consensus: a detector scoring the wrong way, or a broken consensus, lands far below this.
    assert 0.8 < first.score <= 1 and first.n_trials == 6  # 0.95 measured (hbos)


def test_selection_never_sees_labels_unless_asked(demo_xy, monkeypatch):
    X, y = demo_xy
    import pynomaly_core.selection.consensus as search

    seen = []
    monkeypatch.setattr(search, "roc_auc_score", lambda labels, scores: seen.append(labels) or 0.5)
    monkeypatch.setitem(search.LABEL_METRICS, "roc_auc", search.roc_auc_score)
    _select(X)
    assert seen == []
    selection = _select(X, y)
    assert selection.criterion == "roc_auc" and len(seen) > 0


def test_labelled_selection_finds_a_good_detector(demo_xy):
    X, y = demo_xy
    selection = _select(X, y, n_trials=8)
    assert selection.score > 0.85  # ROC-AUC of the labelled anomalies, the detectors fitted without labels


def test_unsupervised_candidates_are_judged_on_every_labelled_anomaly_in_one_fit(demo_xy):
    from sklearn.metrics import roc_auc_score

    from pynomaly_core.selection.consensus import make_evaluator, make_folds

    X, y = demo_xy
    known = np.zeros_like(y)
    known[np.flatnonzero(y == 1)[:4]] = 1
    evaluate = make_evaluator(X, known, make_folds(X, known, 3, seed=1), 0.1, 1, "roc_auc")
    fitted_without_labels = registry.get("iforest").build({}, 0.1, 1).fit(X)
    assert list(evaluate(registry.get("iforest"), {})) == [pytest.approx(roc_auc_score(known, fitted_without_labels.decision_scores_))]
    assert len(list(evaluate(registry.get("xgbod"), {}))) == 3  # a semi-supervised one is cross-validated


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


def test_meta_selection_ensembles_iforest_with_the_best_predicted_models_without_labels(demo_xy):
    X, y = demo_xy
    detector, selection = train_detector(X, None, TrainConfig(strategy="meta"), seed=0, study_name="unused")
    assert isinstance(detector, RankEnsemble) and len(selection.params["members"]) == 3
    assert selection.criterion == "meta_predicted_aucroc" and 0.5 < selection.score <= 1
    kb = metaselect.knowledge_base()
    prediction = metaselect.predict(metaselect.meta_features(X, 0), kb, 3)
    ranking = dict(prediction.ranking())
    others = [name for name in ranking if name != "iforest"][:2]
    top = [metaselect.models()[name] for name in ["iforest", *others]]  # knowledge-base models: detectors with their parameters
    # IForest weighs as much as the two others together.
    assert selection.params == {"members": [d for d, _ in top], "member_params": [p for _, p in top], "weights": [2, 1, 1]}
    assert selection.score == pytest.approx(np.average([ranking[name] for name in ["iforest", *others]], weights=[2, 1, 1]))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, detector.decision_scores_) > 0.85  # the labels only grade the choice


def test_a_prediction_falls_back_on_the_overall_figures_the_farther_the_neighbours_are():
    near = metaselect.Neighbours(["iforest", "knn", "lof"], np.array([[0.7, 0.9, 0.8]]), np.array([1.0]), distance=2.0)
    overall = {"iforest": 0.8, "knn": 0.7, "lof": 0.75}
    assert metaselect.Prediction(near, overall, np.inf).ensemble(2) == ["iforest", "knn"]  # the neighbours alone
    assert metaselect.Prediction(near, overall, 0.0).ensemble(2) == ["iforest", "lof"]  # the overall figures alone
    halfway = metaselect.Prediction(near, overall, 2.0)  # reach = distance: half and half
    assert halfway.trust == 0.5 and dict(halfway.ranking()) == pytest.approx({"iforest": 0.75, "knn": 0.8, "lof": 0.775})


def _toy_kb(aucroc_m1: dict[str, float]) -> dict:
    """Four datasets in two pairs of near neighbours (A, B and C, D); m2 scores 1.4 - m1, IForest 0.6 everywhere."""
    features = {"A": [0.0], "B": [0.1], "C": [5.0], "D": [5.1]}
    entries = [{"dataset": name, "seed": 1, "features": features[name], "aucroc": {"iforest": 0.6, "m1": value, "m2": 1.4 - value}}
               for name, value in aucroc_m1.items()]
    return {"models": [{"model": m} for m in ("iforest", "m1", "m2")], "datasets": dict.fromkeys(features, {}), "entries": entries}


def test_the_fallback_reach_is_fitted_leaving_each_dataset_out(monkeypatch):
    monkeypatch.setattr(metaselect, "NEIGHBOUR_DATASETS", 1)
    # Neighbours that agree: each dataset's neighbour names its best model, the other datasets' overall figures do not.
    agreeing = _toy_kb({"A": 0.9, "B": 0.9, "C": 0.5, "D": 0.5})
    assert metaselect.fitted_reach(agreeing, 2) > 0
    # Neighbours that mislead (A and B disagree): the overall figures win, and the reach is 0.
    misleading = _toy_kb({"A": 0.9, "B": 0.5, "C": 0.9, "D": 0.9})
    assert metaselect.fitted_reach(misleading, 2) == 0


def test_meta_selection_with_few_labels_tries_the_top_candidates_the_ensemble_and_it_guided_by_the_labels(demo_xy, tmp_path):
    X, y = demo_xy
    known = np.zeros_like(y)
    known[np.flatnonzero(y == 1)[:2]] = 1  # two labelled anomalies, every other row unknown
    storage = f"sqlite:///{tmp_path}/o.db"
    train = TrainConfig(strategy="meta", use_labels=True, meta_candidates=4, storage=storage, progress_bar=False)
    _, selection = train_detector(X, known, train, seed=0, study_name="few")
    assert selection.n_trials == 6
    trials = optuna.load_study(study_name="few", storage=storage).trials
    assert {t.params["detector"] for t in trials} >= {"rank_ensemble", "rank_ensemble+pu_logistic"} and len(trials) == 6

    # The guided candidate is the label-free ensemble plus a classifier of the labelled anomalies,
    # cross-validated: each of the two folds holds out one labelled anomaly.
    guided = next(t for t in trials if t.params["detector"] == "rank_ensemble+pu_logistic")
    assert guided.intermediate_values.keys() == {0, 1}

    # Each candidate is judged by the expected utility of replacing the label-free ensemble (which
    # scores 0): its gain predicted by the neighbours, measured by the labelled anomalies with the
    # noise of its row-by-row disagreement with the ensemble (the guided one: a label's rank variance).
    kb = metaselect.knowledge_base()
    prediction = metaselect.predict(metaselect.meta_features(X, 0), kb, 3)
    near, top = prediction.near, prediction.ensemble(3)
    models = metaselect.models(kb)
    ensemble = RankEnsemble([models[m][0] for m in top], [models[m][1] for m in top], metaselect.anchored_weights(top), random_state=0).fit(X)
    ranks, measured = rankdata(ensemble.decision_scores_) / len(X), roc_auc_score(known, ensemble.decision_scores_)
    prior_variance = metaselect.difference_error(kb, 3)
    rank_variance = np.mean([e["anomaly_rank_variance"] for e in kb["entries"]])
    assert selection.criterion == metaselect.GAIN_CRITERION
    for trial in trials:
        name = trial.params["detector"]
        if name == "rank_ensemble":
            assert trial.value == 0 and trial.user_attrs["measured"] == pytest.approx(measured)
            continue
        if name == "rank_ensemble+pu_logistic":
            prior_gain, noise = 0.0, rank_variance
        else:
            scores = registry.get(models[name][0]).build(models[name][1], 0.1, 0).fit(X).decision_scores_
            prior_gain, noise = near.predicted([name]) - near.predicted(top), metaselect.label_noise(scores, ranks)
        expected = metaselect.gain_utility(prior_gain, prior_variance, trial.user_attrs["measured"] - measured, 2, noise)
        assert trial.value == pytest.approx(expected)
    assert selection.score == max(t.value for t in trials)

    # One labelled anomaly cannot be held out: the classifier would be judged on the label it was fitted with.
    known[np.flatnonzero(known)[1]] = 0
    _, selection = train_detector(X, known, train, seed=0, study_name="one")
    tried = {t.params["detector"] for t in optuna.load_study(study_name="one", storage=storage).trials}
    assert selection.n_trials == 5 and "rank_ensemble+pu_logistic" not in tried


def test_rank_ensemble_weighs_its_members(demo_xy):
    X, _ = demo_xy
    first_only = RankEnsemble(["iforest", "hbos"], weights=[1, 0], random_state=0).fit(X)
    assert np.allclose(first_only.decision_scores_, RankEnsemble(["iforest"], random_state=0).fit(X).decision_scores_)
    with pytest.raises(ValueError, match="2 members but 1 weights"):
        RankEnsemble(["iforest", "hbos"], weights=[1]).fit(X)


def test_a_member_that_cannot_fit_is_left_out_with_its_weight(demo_xy):
    X, _ = demo_xy
    no_label = np.zeros(len(X), dtype=int)  # pu_logistic refuses to fit without a labelled anomaly
    ensemble = RankEnsemble(["iforest", "pu_logistic"], weights=[1, 3], random_state=0).fit(X, no_label)
    assert list(ensemble.left_out_) == ["pu_logistic"] and "at least one anomaly" in ensemble.left_out_["pu_logistic"]
    np.testing.assert_allclose(ensemble.decision_scores_, RankEnsemble(["iforest"], random_state=0).fit(X).decision_scores_)
    with pytest.raises(ValueError, match="no member could fit this data"):
        RankEnsemble(["pu_logistic"]).fit(X, no_label)


def test_a_label_guided_ensemble_averages_the_members_and_the_classifier_half_and_half(demo_xy):
    from sklearn.metrics import roc_auc_score

    X, y = demo_xy
    known = np.zeros_like(y)
    known[np.flatnonzero(y == 1)[:5]] = 1
    guided = label_guided_spec(["iforest", "hbos", "knn"], [{}, {"n_bins": 5}, {}]).build({}, 0.1, 0).fit(X, known)
    unguided = RankEnsemble(["iforest", "hbos", "knn"], [{}, {"n_bins": 5}, {}], random_state=0).fit(X)
    classifier = registry.get("pu_logistic").build({}, 0.1, 0).fit(X, known)  # fitted with the labels
    percentile = np.searchsorted(np.sort(classifier.decision_scores_), classifier.decision_scores_, side="right") / len(X)
    assert np.allclose(guided.decision_scores_, (unguided.decision_scores_ + percentile) / 2)
    hidden = known == 0
    assert roc_auc_score(y[hidden], guided.decision_function(X[hidden])) > roc_auc_score(y[hidden], unguided.decision_function(X[hidden]))


def test_every_knowledge_base_model_builds_and_has_a_figure_everywhere():
    kb = metaselect.knowledge_base()
    X = np.random.default_rng(0).normal(size=(100, 3))
    for name, (detector, params) in metaselect.models().items():
        assert model_name(detector, params) == name
        assert registry.get(detector).build(params, 0.1, 0).fit(X).decision_scores_.shape == (100,)
    assert all(set(e["aucroc"]) == set(metaselect.models()) for e in kb["entries"])
    assert len({e["dataset"] for e in kb["entries"]}) == 44 and all(0 <= e["anomaly_rank_variance"] < 0.25 for e in kb["entries"])


def test_one_lucky_labelled_anomaly_does_not_replace_the_label_free_ensemble():
    # The same measured gain of 5 points: from one labelled anomaly on a candidate that disagrees
    # with the ensemble row by row, it is noise; from twenty on one that mostly agrees, evidence.
    lucky = metaselect.gain_utility(prior_gain=0.0, prior_variance=0.014, measured_gain=0.05, n_labelled=1, noise=0.05)
    consistent = metaselect.gain_utility(prior_gain=0.0, prior_variance=0.014, measured_gain=0.05, n_labelled=20, noise=0.01)
    assert lucky < 0 < consistent < 0.05
    # Sure gains count as they are; an even chance of gaining or losing as much costs the expected loss.
    assert metaselect.gain_utility(0.03, 1e-8, 0.03, 1, 1e-8) == pytest.approx(0.03)
    sd = 0.1
    assert metaselect.gain_utility(0.0, sd**2, 0.0, 1, 1e12) == pytest.approx(-(metaselect.LOSS_WEIGHT - 1) * sd / np.sqrt(2 * np.pi))


def test_a_labels_noise_is_how_much_a_candidate_disagrees_with_the_ensemble_row_by_row():
    ranks = np.arange(1, 101) / 100
    assert metaselect.label_noise(np.arange(100.0), ranks) == 1e-4  # the same ranking: floored
    assert metaselect.label_noise(-np.arange(100.0), ranks) == pytest.approx(np.var(2 * ranks), rel=0.01)  # reversed


def test_the_prior_variance_of_a_gain_is_measured_on_the_knowledge_base_it_is_given():
    kb = metaselect.knowledge_base()
    without_cardio = metaselect.without_datasets(kb, ["cardio"])
    assert metaselect.difference_error(without_cardio, 3) != metaselect.difference_error(kb, 3)
    assert 0 < metaselect.difference_error(kb, 3) < 0.05


def test_semi_supervised_candidates_only_with_labels():
    from pynomaly_core.selection.consensus import candidate_names, search_candidates

    assert "xgbod" not in candidate_names(TrainConfig(strategy="consensus"))
    assert {"xgbod", "pu_logistic"} <= set(candidate_names(TrainConfig(strategy="consensus", use_labels=True)))
    with pytest.raises(ValueError, match="train.detectors: xgbod fit with labels; set train.use_labels"):
        candidate_names(TrainConfig(detectors=["iforest", "xgbod"]))
    labelled = TrainConfig(detectors=["iforest", "xgbod"], use_labels=True)
    assert list(search_candidates(labelled, np.array([0, 1, 0, 1]))) == ["iforest", "xgbod"]
    assert list(search_candidates(labelled, np.array([0, 1, 0, 0]))) == ["iforest"]


def test_xgbod_is_fitted_with_the_labels_of_the_fit_folds_only(demo_xy, monkeypatch):
    from pynomaly_core.detectors.pyod import PyODSemiSupervisedDetector
    from pynomaly_core.selection.consensus import make_folds

    X, y = demo_xy
    known = np.zeros_like(y)
    known[np.flatnonzero(y == 1)[:6]] = 1
    fits = []
    real_fit = PyODSemiSupervisedDetector._fit

    def spy(self, X_fit, y_fit):
        fits.append((X_fit.copy(), y_fit.copy()))
        return real_fit(self, X_fit, y_fit)

    monkeypatch.setattr(PyODSemiSupervisedDetector, "_fit", spy)
    _select(X, known, detectors=["xgbod"], n_trials=1, pruning=False)
    folds = make_folds(X, known, 3, seed=1)
    assert len(fits) == len(folds) == 3
    for (X_fit, y_fit), (fit_rows, held_out) in zip(fits, folds):
        np.testing.assert_array_equal(X_fit, X[fit_rows])
        np.testing.assert_array_equal(y_fit, known[fit_rows])
        assert known[held_out].sum() == 2  # each held-out fold's labelled anomalies ...
        held_out_anomalies = X[held_out][known[held_out] == 1]
        assert not any((X_fit == row).all(axis=1).any() for row in held_out_anomalies)  # ... are never in its fit


def _study_with_trials(X, storage):
    candidates = {name: registry.get(name) for name in ["iforest", "knn", "hbos"]}
    selection = _select(X, detectors=list(candidates), storage=storage)
    return selection, optuna.load_study(study_name="s", storage=storage), candidates


@pytest.mark.parametrize("margin", [0.01, -0.01])
def test_trial_ensemble_replaces_the_best_trial_only_when_it_wins(demo_xy, tmp_path, margin):
    from pynomaly_core.selection.consensus import top_configurations, with_trial_ensemble

    X, _ = demo_xy
    best, study, candidates = _study_with_trials(X, f"sqlite:///{tmp_path}/o.db")
    evaluated = []

    def evaluate(spec, params):  # the ensemble scores `margin` above or below the best trial on each fold
        evaluated.append(spec.fixed)
        yield from [best.score + margin] * 3

    selection = with_trial_ensemble(best, study, candidates, 3, evaluate)
    top = top_configurations(study, candidates, 3)
    assert len(top) == 3 and len({json.dumps(c, sort_keys=True) for c in top}) == 3
    completed = sorted((t.value for t in study.trials if t.value is not None), reverse=True)
    assert top[0] == (best.detector, best.params) and completed[0] == best.score
    assert evaluated == [{"members": tuple(n for n, _ in top), "member_params": tuple(p for _, p in top), "weights": None}]
    record = {"members": [n for n, _ in top], "member_params": [p for _, p in top], "score": pytest.approx(best.score + margin), "chosen": margin > 0}
    assert selection.trial_ensemble == record and study.user_attrs["trial_ensemble"] == record
    if margin > 0:
        assert (selection.detector, selection.score) == ("rank_ensemble", pytest.approx(best.score + margin))
        assert selection.params == {"members": record["members"], "member_params": record["member_params"]}
    else:
        assert (selection.detector, selection.params, selection.score) == (best.detector, best.params, best.score)


def test_trial_ensemble_is_judged_on_the_trials_folds_and_reloads_exactly(demo_xy, tmp_path):
    import io

    import joblib

    X, _ = demo_xy
    train = TrainConfig(strategy="consensus", detectors=["iforest", "knn", "hbos"], n_trials=6, ensemble_size=3,
                        storage=f"sqlite:///{tmp_path}/o.db", progress_bar=False)
    detector, selection = train_detector(X, None, train, seed=1, study_name="s")
    study = optuna.load_study(study_name="s", storage=train.storage)
    record = selection.trial_ensemble
    assert record["chosen"] == (record["score"] > study.best_value)
    assert selection.score == max(record["score"], study.best_value)
    if record["chosen"]:
        assert isinstance(detector, RankEnsemble) and list(detector.members) == record["members"]
    # An ensemble of trials, with their parameters, through joblib: the same scores.
    ensemble = RankEnsemble(record["members"], record["member_params"], random_state=1).fit(X)
    assert [d.params for d in ensemble.detectors_] == record["member_params"]
    buffer = io.BytesIO()
    joblib.dump(ensemble, buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(joblib.load(buffer).decision_function(X), ensemble.decision_function(X))


def test_train_stage_calibrates_a_conformal_threshold_and_registers_xgbod(workdir):
    import joblib
    import mlflow
    from mlflow import MlflowClient

    from pynomaly_core import stages
    from pynomaly_core.config import ThresholdConfig
    from pynomaly_core.detectors.base import conformal_threshold
    from pynomaly_core.selection.base import calibration_split

    config = demo_config(detectors=["xgbod"], use_labels=True, n_trials=2, cv_folds=2)
    config = config.model_copy(update={
        "threshold": ThresholdConfig(target_fpr=0.1),
        "registry": config.registry.model_copy(update={"model_name": "bc-xgbod"}),
    })
    stages.validate(config)
    stages.preprocess(config)
    trained = stages.train(config)
    assert trained.criterion == "roc_auc" and trained.n_failed == 0

    train_rows = pd.read_parquet(config.paths.train)
    pipeline = joblib.load(config.paths.model)
    X = pipeline[0].transform(features(train_rows, config.data))
    y = train_rows["malignant"].to_numpy()
    fit_rows, calibration_rows = calibration_split(y, len(X), config.threshold, config.seed)
    detector = pipeline[-1]
    assert detector.score_distribution_.n == len(fit_rows) and y[calibration_rows].sum() == 0  # calibrated on normal rows only
    assert detector.threshold_ == conformal_threshold(detector.decision_function(X[calibration_rows]), 0.1)

    run = MlflowClient().get_run(trained.run_id)
    params, ensemble_score = run.data.params, run.data.metrics["trial_ensemble_score"]
    assert params["trial_ensemble.members"] == "['xgbod', 'xgbod']"
    # The ensemble of the best trials replaces the best trial exactly when it scores higher.
    if params["trial_ensemble.chosen"] == "True":
        assert trained.detector == "rank_ensemble" and trained.selection_score == ensemble_score
    else:
        assert params["trial_ensemble.chosen"] == "False" and trained.detector == "xgbod" and ensemble_score <= trained.selection_score
    assert "false_positive_rate" in stages.evaluate(config).metrics
    registered = stages.register(config)
    assert "xgboost-cpu==3.2.0" in open(mlflow.pyfunc.get_model_dependencies(registered.model_uri)).read()


def test_costly_models_are_screened_out_and_said_so():
    kb = metaselect.knowledge_base()
    allowed, skipped = metaselect.affordable_models(kb, (3000, 512), timeout=None)
    assert {"mcd", "sk_elliptic"} <= set(skipped) and "cube of the features (512 > 128)" in skipped["mcd"]
    assert allowed == set(metaselect.models()) - {"mcd", "sk_elliptic"}
    # The knowledge base's measured fits predict the cost: on 7000 x 500 rows, KDE and OCSVM take longer than a second, HBOS does not.
    assert metaselect.fit_seconds(kb, "kde", 7000, 500) > metaselect.fit_seconds(kb, "kde", 700, 5) * 10
    _, skipped = metaselect.affordable_models(kb, (7000, 500), timeout=1.0)
    assert "predicted fit" in skipped["kde"] and "hbos" not in skipped and "iforest" not in skipped


def test_the_meta_selector_fits_only_affordable_models_and_records_the_rest(demo_xy):
    X, _ = demo_xy
    train = TrainConfig(strategy="meta", timeout=0.01, storage="sqlite:///:memory:", progress_bar=False)
    selection = make_selector(train, seed=0).select(X)
    assert selection.skipped and all("predicted fit" in reason for reason in selection.skipped.values())
    members = [model_name(d, p) for d, p in zip(selection.params["members"], selection.params["member_params"])]
    assert members[0] == "iforest" and not set(members) & set(selection.skipped)
