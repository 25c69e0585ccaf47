"""The benchmark protocol: split sizes, no label leakage into selection, determinism per seed."""

import json

import numpy as np
import pytest

import pynomaly_core.bench as bench
from pynomaly_core.bench import adbench_split, reveal_labels, run_benchmark, run_one
from pynomaly_core.config import TrainConfig
from tests.conftest import ADBENCH

FAST = TrainConfig(detectors=["iforest", "copod", "hbos"], n_trials=3, cv_folds=2, storage="sqlite:///:memory:", progress_bar=False)


def load(name):
    data = np.load(ADBENCH / f"{name}.npz")
    return data["X"].astype(float), data["y"].astype(int)


@pytest.mark.parametrize("name, n_rows", [("glass", 214), ("cardio", 1831), ("shuttle", 49097)])
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
    real = bench.train_detector

    def spy(X_train, labels, train, seed, **kwargs):
        seen.update(X=X_train, labels=labels)
        return real(X_train, labels, train, seed, **kwargs)

    monkeypatch.setattr(bench, "train_detector", spy)
    run_one(X, y, seed=1, label_fraction=fraction, train=FAST.model_copy(update={"use_labels": fraction > 0}))
    X_train, _, y_train, _ = adbench_split(X, y, seed=1)
    np.testing.assert_array_equal(seen["X"], X_train)
    if fraction == 0:
        assert seen["labels"] is None
    else:
        assert 1 <= seen["labels"].sum() < y_train.sum() and (y_train[seen["labels"] == 1] == 1).all()


def test_same_seed_same_result():
    X, y = load("glass")
    assert {**run_one(X, y, 3, 0.0, FAST), "fit_seconds": 0} == {**run_one(X, y, 3, 0.0, FAST), "fit_seconds": 0}


def test_a_failing_dataset_is_reported_and_the_others_go_on(tmp_path):
    X, y = load("WBC")
    np.savez(tmp_path / "wbc.npz", X=X, y=y)
    np.savez(tmp_path / "broken.npz", X=X)  # no labels
    report = run_benchmark(tmp_path, 0.0, [1], FAST, progress=lambda line: None)
    assert [r["dataset"] for r in report["results"]] == ["wbc"]
    assert report["errors"][0]["dataset"] == "broken" and "KeyError" in report["errors"][0]["error"]
    assert report["mean_aucroc"] == report["results"][0]["aucroc"] > 0.8
    json.dumps(report)
