"""The benchmark protocol: split sizes, no label leakage into selection, determinism per seed."""

import dataclasses
import json

import numpy as np
import pytest

import pynomaly_core.selection.bench as bench
from pynomaly_core.selection.bench import adbench_split, reveal_labels, run_benchmark, run_one
from pynomaly_core.config import ThresholdConfig, TrainConfig
from pynomaly_core.detectors.base import conformal_threshold
from pynomaly_core.selection.base import Selection, Selector, label_guided_spec
from pynomaly_core.selection import make_selector
from tests.conftest import ADBENCH, ROOT

FAST = TrainConfig(detectors=["iforest", "copod", "hbos"], n_trials=3, cv_folds=2, storage="sqlite:///:memory:", progress_bar=False)


def load(name):
    data = np.load(ADBENCH / f"{name}.npz")
    return data["X"].astype(float), data["y"].astype(int)


def test_the_datasets_read_here_ship_with_the_repository():
    # A fresh clone has nothing beside it; the development datasets are passed to `pynomaly bench` and the scripts as an argument.
    assert ADBENCH.resolve().is_relative_to(ROOT)
    assert {p.name for p in ADBENCH.iterdir()} == {"README.md", *(f"{n}.npz" for n in ("WBC", "glass", "breastw", "cardio", "mammography"))}


@pytest.mark.parametrize("name, n_rows", [("glass", 214), ("cardio", 1831), ("mammography", 11183)])
def test_protocol_sizes_and_stratification(name, n_rows):
    X, y = load(name)
    assert len(X) == n_rows
    X_train, X_test, y_train, y_test = adbench_split(X, y, seed=1)
    expected = min(max(n_rows, 1000), 10000)
    assert len(X_train) + len(X_test) == expected and len(X_test) == int(np.ceil(0.3 * expected))
    assert abs(y_train.mean() - y_test.mean()) < 0.01
    assert X_train.min() == 0 and X_train.max() == pytest.approx(1)  # MinMax fitted on the training part


def test_few_labels_reveal_only_anomalies():
    _, _, y_train, _ = adbench_split(*load("cardio"), seed=2)
    assert reveal_labels(y_train, 0.0, seed=2) is None
    known = reveal_labels(y_train, 0.01, seed=2)
    n_anomalies = int(y_train.sum())
    assert known.sum() == max(1, round(0.01 * n_anomalies))
    assert (y_train[known == 1] == 1).all()  # only true anomalies are revealed, nothing about normals
    glass_known = reveal_labels(adbench_split(*load("glass"), seed=1)[2], 0.01, seed=1)
    assert glass_known.sum() == 1  # at least one


@pytest.mark.parametrize("fraction", [0.0, 0.05])
def test_selection_never_sees_test_rows_or_hidden_labels(monkeypatch, fraction):
    X, y = load("WBC")
    seen = {}
    real = Selector.select

    def spy(self, X_train, labels):
        seen.update(X=X_train, labels=labels)
        return real(self, X_train, labels)

    monkeypatch.setattr(Selector, "select", spy)
    run_one(X, y, seed=1, label_fraction=fraction, train=FAST.model_copy(update={"use_labels": fraction > 0}))
    X_train, _, y_train, _ = adbench_split(X, y, seed=1)
    np.testing.assert_array_equal(seen["X"], X_train)
    if fraction == 0:
        assert seen["labels"] is None
    else:
        assert 1 <= seen["labels"].sum() < y_train.sum() and (y_train[seen["labels"] == 1] == 1).all()


@pytest.mark.parametrize("train", [FAST, TrainConfig(storage="sqlite:///:memory:", progress_bar=False)], ids=["consensus", "meta"])
def test_same_seed_same_result(train):
    X, y = load("glass")
    assert {**run_one(X, y, 3, 0.0, train), "fit_seconds": 0} == {**run_one(X, y, 3, 0.0, train), "fit_seconds": 0}


def test_results_name_an_ensembles_members_and_their_weights_when_they_differ():
    def described(spec):
        params = spec.search_space(None)
        return bench.described(Selection(spec.name, params, 0.0, "roc_auc", 1, 1, 0, 0, "bench-1"))

    guided = label_guided_spec(["knn", "iforest"], [{"n_neighbors": 20}, {}])
    assert described(guided) == "knn(n_neighbors=20)+iforest+pu_logistic (weights 1, 1, 2)"
    assert described(dataclasses.replace(guided, search_space=lambda trial: {"members": ["knn", "iforest"], "weights": [1, 1]})) == "knn+iforest"


def test_a_failing_dataset_is_reported_and_the_others_go_on(tmp_path):
    X, y = load("WBC")
    np.savez(tmp_path / "wbc.npz", X=X, y=y)
    np.savez(tmp_path / "broken.npz", X=X)  # no labels
    report = run_benchmark(tmp_path, 0.0, [1], FAST, progress=lambda line: None)
    assert [r["dataset"] for r in report["results"]] == ["wbc"]
    assert report["errors"][0]["dataset"] == "broken" and "KeyError" in report["errors"][0]["error"]
    assert report["mean_aucroc"] == report["results"][0]["aucroc"] > 0.8
    json.dumps(report)


def test_conformal_quantile_on_known_scores():
    scores = np.arange(100, 0, -1.0)  # 1..100, unsorted
    assert conformal_threshold(scores, 0.1) == 91  # ceil(101 * 0.9) = 91st smallest
    assert conformal_threshold(scores, 0.05) == 96  # ceil(101 * 0.95) = 96
    assert conformal_threshold(np.arange(1.0, 20), 0.05) == 19  # (19+1) * 0.95 = 19 exactly: the largest
    with pytest.raises(ValueError, match="18 calibration rows cannot bound the false-positive rate at 0.05: at least 19 are needed"):
        conformal_threshold(np.arange(1.0, 19), 0.05)


def test_calibration_rows_are_held_aside_from_selection_and_fit(monkeypatch):
    from pynomaly_core.selection.consensus import ConsensusSearch
    from pynomaly_core.selection.base import calibration_split

    X_train, _, y_train, _ = adbench_split(*load("cardio"), seed=1)
    known = reveal_labels(y_train, 0.05, seed=1)
    threshold = ThresholdConfig(target_fpr=0.1, calibration_share=0.25)
    seen = {}
    real = ConsensusSearch.choose

    def spy(self, X, y):
        seen.update(X=X, y=y)
        return real(self, X, y)

    monkeypatch.setattr(ConsensusSearch, "choose", spy)
    selector = make_selector(FAST.model_copy(update={"use_labels": True}), threshold, 1, study_name="s")
    detector = selector.select(X_train, known).model
    fit_rows, calibration_rows = calibration_split(known, len(X_train), threshold, seed=1)
    assert len(calibration_rows) == round(0.25 * len(X_train)) and not set(fit_rows) & set(calibration_rows)
    assert known[calibration_rows].sum() == 0  # labelled anomalies stay with the fit rows
    np.testing.assert_array_equal(seen["X"], X_train[fit_rows])
    np.testing.assert_array_equal(seen["y"], known[fit_rows])
    assert len(detector.decision_scores_) == len(fit_rows)
    assert detector.threshold_ == conformal_threshold(detector.decision_function(X_train[calibration_rows]), 0.1)
    np.testing.assert_array_equal(detector.labels_, detector.decision_scores_ > detector.threshold_)


@pytest.mark.parametrize("name", ["cardio", "breastw"])
def test_realised_false_positive_rate_on_test_normals(name):
    X, y = load(name)
    threshold = ThresholdConfig(target_fpr=0.1)
    fprs = []
    for seed in (1, 2, 3):  # with every training label known, the calibration rows are normal rows
        X_train, X_test, y_train, y_test = adbench_split(X, y, seed)
        train = FAST.model_copy(update={"use_labels": True})
        detector = make_selector(train, threshold, seed, study_name=f"s{seed}").select(X_train, y_train).model
        fprs.append(np.mean(detector.predict(X_test[y_test == 0])))
    assert np.mean(fprs) == pytest.approx(0.1, abs=0.03)  # 3 seeds of ~140 calibration and ~200 test normals (breastw)
    # Label-free, the calibration rows hide anomalies, so the rate on normals stays at or below the target.
    row = run_one(X, y, seed=1, label_fraction=0.0, train=FAST, threshold=threshold)
    assert row["threshold_fpr"] <= 0.1 + 0.01


def test_bench_records_the_realised_rate_and_its_gap(tmp_path, capsys):
    from pynomaly_core.cli import main

    X, y = load("WBC")
    np.savez(tmp_path / "wbc.npz", X=X, y=y)
    config = tmp_path / "c.yaml"
    config.write_text("name: t\ndata: {source: x.csv, columns: {a: {}}}\nregistry: {model_name: m, gate_metric: selection_score}\n"
                      "train: {strategy: consensus, detectors: [iforest], n_trials: 1, cv_folds: 2}\n"
                      "paths: {validated: a, quarantine: a, validation_report: a, train: a, test: a, preprocessor: a, model: a, "
                      "training: a, metrics: a, plots: a, figures: a, explanation: a, registration: a}\n")
    out = tmp_path / "r.json"
    assert main(["bench", str(tmp_path), "--seeds", "1", "--config", str(config), "--target-fpr", "0.05", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (result,) = report["results"]
    assert report["target_fpr"] == 0.05 and report["mean_threshold_fpr"] == result["threshold_fpr"]
    assert f"mean realised FPR on test normals {result['threshold_fpr']:.4f}  (target 0.05, gap {result['threshold_fpr'] - 0.05:+.4f})" in capsys.readouterr().out
    assert main(["bench", str(tmp_path), "--target-fpr", "0.7"]) == 2
    assert "--target-fpr 0.7: Input should be less than 0.5" in capsys.readouterr().err


def test_lodo_leaves_out_every_development_dataset_sharing_rows_by_content(tmp_path, monkeypatch):
    """`--lodo` through the meta path: WBC under another name, and breastw (which holds every WBC row), are left out."""
    from pynomaly_core.selection import metaselect
    from pynomaly_core.cli import main

    X, y = load("WBC")
    np.savez(tmp_path / "renamed.npz", X=X, y=y)
    shipped = metaselect.knowledge_base()
    handed = []
    real = metaselect.MetaSelector.__init__

    def spy(self, *args, knowledge_base=None, **kwargs):
        handed.append(knowledge_base)
        real(self, *args, knowledge_base=knowledge_base, **kwargs)
        # From here on the selection may read only the knowledge base it was handed.
        monkeypatch.setattr(metaselect, "knowledge_base", lambda *a: pytest.fail("the shipped knowledge base was read"))

    monkeypatch.setattr(metaselect.MetaSelector, "__init__", spy)
    out = tmp_path / "r.json"
    assert main(["bench", str(tmp_path), "--seeds", "1", "--lodo", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert sorted(result["left_out"]) == ["WBC", "breastw"]
    (kb,) = handed
    assert {"WBC", "breastw"}.isdisjoint({e["dataset"] for e in kb["entries"]}) and len(kb["datasets"]) == len(shipped["datasets"]) - 2
    assert result["detector"].startswith("iforest+") and 0.5 < result["aucroc"] <= 1 and 0.5 < result["iforest_aucroc"] <= 1
