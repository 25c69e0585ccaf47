"""The labels' default strategy (issue 25): IForest without labels, the positive-unlabelled learner
blended with it by the label counts, dismissed rows as known normals, and `pynomaly bench`'s
plain PU baseline."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pynomaly_core.selection.bench import adbench_split, reveal_labels, run_one
from pynomaly_core.config import ThresholdConfig, TrainConfig
from pynomaly_core.detectors import registry
from pynomaly_core.detectors.pu import DISMISSED_WEIGHT, KNOWN_NORMAL, targets_and_weights
from pynomaly_core.labels import pu
from pynomaly_core.selection import make_selector
from pynomaly_core.selection.base import calibration_split
from tests.conftest import ADBENCH

DEFAULT = TrainConfig(progress_bar=False)


def split(name, seed=1):
    data = np.load(ADBENCH / f"{name}.npz")
    return adbench_split(data["X"].astype(float), data["y"].astype(int), seed)


def test_without_labels_the_default_is_iforest_itself():
    X_train, X_test, _, _ = split("cardio")
    selection = make_selector(DEFAULT, seed=1).select(X_train)
    iforest = registry.get("iforest").build({}, 0.1, 1).fit(X_train)
    assert selection.detector == "iforest"
    np.testing.assert_array_equal(selection.model.decision_function(X_test), iforest.decision_function(X_test))


def test_the_rule_depends_on_the_label_counts_only(monkeypatch):
    assert pu.learner_weight(0) == 0 and pu.learner_weight(0, 40) == 0  # dismissed rows alone: nothing to learn anomalies from
    assert pu.HALF_WEIGHT_LABELS == 0 and pu.learner_weight(1) == 1  # as fitted: the learner alone from the first label
    monkeypatch.setattr(pu, "HALF_WEIGHT_LABELS", 2.0)  # the rule's form, with a k that leaves IForest a share
    weights = [pu.learner_weight(n) for n in (1, 2, 5, 10, 100)]
    assert weights == sorted(weights) and 0 < weights[0] and weights[-1] < 1 and pu.learner_weight(2) == 0.5
    assert pu.learner_weight(1, 10) == pytest.approx(3 / 5)  # a dismissed row counts as a fifth of a labelled anomaly


def test_with_labels_the_default_is_the_plain_learner():
    X_train, X_test, y_train, y_test = split("cardio")
    known = reveal_labels(y_train, 0.0, seed=1, count=5)
    assert known.sum() == 5 and (y_train[known == 1] == 1).all()
    selection = make_selector(DEFAULT.model_copy(update={"use_labels": True}), seed=1).select(X_train, known)
    plain = registry.get("pu_boost").build({"learner": "catboost"}, 0.1, 1).fit(X_train, known)
    assert (selection.detector, selection.params) == ("pu_boost", {"learner": "catboost"})
    np.testing.assert_array_equal(selection.model.decision_function(X_test), plain.decision_function(X_test))
    # Five labelled anomalies of 123 teach it more than chance on rows it never saw.
    assert roc_auc_score(y_test, plain.decision_function(X_test)) > 0.75


def test_a_share_for_iforest_makes_a_rank_blend(monkeypatch):
    monkeypatch.setattr(pu, "HALF_WEIGHT_LABELS", 5.0)
    X_train, X_test, y_train, _ = split("cardio")
    known = reveal_labels(y_train, 0.0, seed=1, count=5)
    selection = make_selector(DEFAULT.model_copy(update={"use_labels": True}), seed=1).select(X_train, known)
    assert selection.params["members"] == ["iforest", "pu_boost"] and selection.params["weights"] == pytest.approx([0.5, 0.5])
    members = selection.model.member_percentiles(X_test)
    np.testing.assert_allclose(selection.model.decision_function(X_test), members.mean(axis=1))


def test_dismissed_rows_are_known_normals_to_the_learner():
    target, weight = targets_and_weights(np.array([1, 0, KNOWN_NORMAL, 0]))
    assert target.tolist() == [1, 0, 0, 0] and weight.tolist() == [1, 1, DISMISSED_WEIGHT, 1]
    with pytest.raises(ValueError, match=r"labels must be 1 \(anomaly\), 0 \(unknown\) or -1 \(dismissed as normal\); got \[2\]"):
        targets_and_weights(np.array([1, 2, 0]))
    X_train, _, y_train, _ = split("cardio", seed=2)
    known = reveal_labels(y_train, 0.0, seed=2, count=5)
    # An analyst's first review: the normal rows among IForest's 40 highest scores are dismissed.
    top = np.argsort(-registry.get("iforest").build({}, 0.1, 2).fit(X_train).decision_scores_)[:40]
    dismissed = top[y_train[top] == 0]
    with_dismissed = known.copy()
    with_dismissed[dismissed] = KNOWN_NORMAL
    learner = registry.get("pu_boost")
    unknown = learner.build(pu.LEARNER_PARAMS, 0.1, 2).fit(X_train, known).decision_scores_[dismissed]
    normal = learner.build(pu.LEARNER_PARAMS, 0.1, 2).fit(X_train, with_dismissed).decision_scores_[dismissed]
    assert np.mean(normal) < np.mean(unknown)  # the learner scores them lower once it knows them normal


def test_dismissed_rows_never_calibrate_and_other_strategies_see_them_as_unknown(monkeypatch):
    from pynomaly_core.selection.consensus import ConsensusSearch

    X_train, _, _, _ = split("WBC")
    y = np.resize(np.array([1, 0, KNOWN_NORMAL, 0]), len(X_train))
    _, calibration = calibration_split(y, len(y), ThresholdConfig(target_fpr=0.1, calibration_share=0.3), seed=1)
    assert set(y[calibration]) == {0}  # rows picked for review by their scores are not exchangeable with new rows

    class Seen(Exception):
        pass

    def spy(self, X, labels):
        seen.append(labels)
        raise Seen

    seen = []
    monkeypatch.setattr(ConsensusSearch, "choose", spy)
    train = TrainConfig(strategy="consensus", detectors=["iforest"], use_labels=True, storage="sqlite:///:memory:", progress_bar=False)
    with pytest.raises(Seen):
        make_selector(train, seed=1, study_name="s").select(X_train, y)
    np.testing.assert_array_equal(seen[0], (y == 1).astype(int))  # a search judges by labelled anomalies; -1 is no class of it


@pytest.mark.parametrize("name", ["cardio", "breastw"])
def test_realised_false_positive_rate_of_the_default_on_test_normals(name):
    fprs = []
    for seed in (1, 2, 3):  # every training label known: the calibration rows are normal rows
        X_train, X_test, y_train, y_test = split(name, seed)
        train = DEFAULT.model_copy(update={"use_labels": True})
        detector = make_selector(train, ThresholdConfig(target_fpr=0.1), seed).select(X_train, y_train).model
        fprs.append(np.mean(detector.predict(X_test[y_test == 0])))
    assert np.mean(fprs) == pytest.approx(0.1, abs=0.03)


def test_bench_prints_the_plain_pu_classifier_beside_iforest(tmp_path, capsys):
    from pynomaly_core.cli import main

    data = np.load(ADBENCH / "WBC.npz")
    np.savez(tmp_path / "wbc.npz", X=data["X"], y=data["y"])
    out = tmp_path / "r.json"
    assert main(["bench", str(tmp_path), "--labels", "3", "--seeds", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (result,) = report["results"]
    X_train, X_test, y_train, y_test = adbench_split(data["X"].astype(float), data["y"].astype(int), 1)
    known = reveal_labels(y_train, 0.0, 1, count=3)
    plain = registry.get("pu_boost").build({"learner": "catboost"}, 0.1, 1).fit(X_train, known)
    assert result["n_labelled"] == 3 and result["pu_aucroc"] == round(roc_auc_score(y_test, plain.decision_function(X_test)), 4)
    assert report["label_count"] == 3 and result["detector"] == "pu_boost(learner=catboost)"
    assert result["aucroc"] == result["pu_aucroc"]  # the default with labels is the plain classifier, fitted alike
    printed = capsys.readouterr().out
    assert "plain_pu" in printed and "against the plain PU classifier (ADBench's CatBoost): mean" in printed
    assert main(["bench", str(tmp_path), "--labels", "0"]) == 2
    assert "--labels 0: give a count of at least 1 labelled anomaly" in capsys.readouterr().err
    assert main(["bench", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs 0: give how many processes run side by side" in capsys.readouterr().err


def test_bench_fits_the_plain_classifier_once_where_the_default_is_that_classifier(monkeypatch):
    import pynomaly_core.detectors.pu as pu_detector

    fits = []
    real = pu_detector.classifier
    monkeypatch.setattr(pu_detector, "classifier", lambda *args: fits.append(args) or real(*args))
    data = np.load(ADBENCH / "WBC.npz")
    X, y = data["X"].astype(float), data["y"].astype(int)
    row = run_one(X, y, seed=1, label_fraction=0.0, train=DEFAULT.model_copy(update={"use_labels": True}), label_count=3)
    assert len(fits) == 1 and row["aucroc"] == row["pu_aucroc"]
    # Calibration rows held aside: the default's learner saw fewer rows, so the baseline is fitted on all of them.
    fits.clear()
    row = run_one(X, y, seed=1, label_fraction=0.0, train=DEFAULT.model_copy(update={"use_labels": True}), label_count=3,
                  threshold=ThresholdConfig(target_fpr=0.1))
    assert len(fits) == 2
    X_train, X_test, y_train, y_test = adbench_split(X, y, 1)
    plain = registry.get("pu_boost").build({"learner": "catboost"}, 0.1, 1).fit(X_train, reveal_labels(y_train, 0.0, 1, count=3))
    assert row["pu_aucroc"] == round(roc_auc_score(y_test, plain.decision_function(X_test)), 4)


def test_bench_jobs_run_side_by_side_with_the_same_report(tmp_path):
    from pynomaly_core.selection.bench import run_benchmark

    for name in ("WBC", "glass"):
        data = np.load(ADBENCH / f"{name}.npz")
        np.savez(tmp_path / f"{name}.npz", X=data["X"], y=data["y"])
    train = DEFAULT.model_copy(update={"use_labels": True})
    alone, side_by_side = (run_benchmark(tmp_path, 0.0, [1, 2], train, progress=lambda line: None, label_count=2, jobs=jobs) for jobs in (1, 2))
    assert [(r["dataset"], r["seed"]) for r in side_by_side["results"]] == [("glass", 1), ("glass", 2), ("WBC", 1), ("WBC", 2)]
    for row in (*alone["results"], *side_by_side["results"]):
        row["fit_seconds"] = 0
    assert side_by_side["results"] == alone["results"] and side_by_side["mean_pu_aucroc"] == alone["mean_pu_aucroc"]


def test_bench_without_labels_has_no_pu_column():
    data = np.load(ADBENCH / "WBC.npz")
    row = run_one(data["X"].astype(float), data["y"].astype(int), seed=1, label_fraction=0.0, train=DEFAULT)
    assert row["detector"] == "iforest" and row["aucroc"] == row["iforest_aucroc"] and "pu_aucroc" not in row


@pytest.mark.parametrize("use_labels, detector", [(False, "iforest"), (True, "pu_boost")])
def test_the_train_stage_trains_the_default(workdir, use_labels, detector):
    import joblib
    from mlflow import MlflowClient

    from pynomaly_core import stages
    from tests.conftest import demo_config

    config = demo_config(strategy="default", use_labels=use_labels)
    stages.validate(config)
    stages.preprocess(config)
    trained = stages.train(config)
    assert trained.detector == detector and trained.criterion == "labels_rule_weight"
    assert trained.selection_score == (1.0 if use_labels else 0.0)  # the learner's weight: all of it from the first label
    assert type(joblib.load(config.paths.model)[-1]).__name__ == ("PositiveUnlabelledBoosting" if use_labels else "PyODDetector")
    run = MlflowClient().get_run(trained.run_id)
    assert run.data.tags["selection.strategy"] == "default"
