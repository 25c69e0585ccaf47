"""A served row's cost and a saved model's size do not grow with the training rows.

ECOD and COPOD are scored from fit-time tables (detectors/ecod.py) and must score as PyOD 3.6.7
does; the reference-keeping detectors fit on a bounded seeded sample; a pickled detector leaves
its per-training-row attributes out. "Cost" is counted as the sizes of the arrays a served row is
searched in, not timed.
"""

import io

import joblib
import numpy as np
import pytest
from pyod.models.copod import COPOD
from pyod.models.ecod import ECOD
from pyod.models.knn import KNN
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pynomaly_core.tracking import model_size
from pynomaly_core.detectors.reference import reference_rows
from pynomaly_core.detectors.ecdf import MAX_KNOTS, EmpiricalDistribution
from pynomaly_core.detectors.ensemble import RankEnsemble
from pynomaly_core.detectors.registry import get
from tests.conftest import ROOT

PYOD = {"ecod": ECOD, "copod": COPOD}


def adbench(name):
    data = np.load(ROOT / "tests" / "data" / "adbench" / f"{name}.npz")
    return data["X"].astype(np.float64), data["y"]


def pickled_bytes(obj) -> int:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.tell()


@pytest.mark.parametrize("model", ["ecod", "copod"])
@pytest.mark.parametrize("dataset", ["cardio", "breastw", "mammography"])  # breastw: 10 values per column, ties everywhere
def test_ecod_and_copod_score_as_pyod_does(model, dataset):
    X, _ = adbench(dataset)
    order = np.random.default_rng(0).permutation(len(X))
    train, new = X[order[:-25]], X[order[-25:]]
    ours = get(model).build({"max_knots": len(train)}, 0.1, 0).fit(train)  # mammography has 5,435 values in a column
    theirs = PYOD[model]().fit(train)
    np.testing.assert_allclose(ours.decision_scores_, theirs.decision_scores_, rtol=0, atol=1e-9)
    assert ours.threshold_ == pytest.approx(np.quantile(theirs.decision_scores_, 0.9), abs=1e-9)
    # PyOD scores a new row together with the training rows; one row at a time, the same number.
    alone = np.array([theirs.decision_function(row[None, :])[0] for row in new])
    np.testing.assert_allclose(ours.decision_function(new), alone, rtol=0, atol=1e-9)


@pytest.mark.parametrize("model", ["ecod", "copod"])
def test_a_column_constant_in_training_scores_as_in_pyod(model):
    X, _ = adbench("cardio")
    train, new = X[:1500].copy(), X[1500:1530].copy()
    train[:, 3] = 0.25  # constant in training; the new rows differ from it
    ours, theirs = get(model).build({}, 0.1, 0).fit(train), PYOD[model]().fit(train)
    np.testing.assert_allclose(ours.decision_scores_, theirs.decision_scores_, rtol=0, atol=1e-9)
    alone = np.array([theirs.decision_function(row[None, :])[0] for row in new])
    np.testing.assert_allclose(ours.decision_function(new), alone, rtol=0, atol=1e-9)


def test_beyond_the_tables_bound_a_new_rows_score_is_close_to_pyods():
    X, y = adbench("mammography")
    train, new = X[:10_000], X[10_000:10_040]
    ours = get("ecod").build({"max_knots": 1000}, 0.1, 0).fit(train)
    assert not all(table.exact for table in ours.tables_)
    np.testing.assert_allclose(ours.decision_scores_, ECOD().fit(train).decision_scores_, rtol=0, atol=1e-9)  # training rows: exact
    alone = np.array([ECOD().fit(train).decision_function(row[None, :])[0] for row in new])
    assert np.abs(ours.decision_function(new) - alone).max() < 0.15  # 0.08 measured


def test_the_documented_difference_pyod_scores_a_batch_transductively():
    X, _ = adbench("breastw")
    train, new = X[:600], X[600:]
    ours, theirs = get("ecod").build({}, 0.1, 0).fit(train), ECOD().fit(train)
    batch = ours.decision_function(new)
    # Ours: a row's score does not depend on the rows sent with it.
    np.testing.assert_array_equal(batch, np.concatenate([ours.decision_function(row[None, :]) for row in new]))
    # PyOD's count the batch's own rows in each ECDF: 83 new rows beside 600 training rows move them.
    assert np.abs(theirs.decision_function(new) - batch).max() > 0.1


def test_the_table_is_exact_up_to_its_bound_and_close_beyond():
    values = np.random.default_rng(1).normal(size=20_000).round(3)  # ties and ~6,000 distinct values
    points = np.random.default_rng(2).normal(size=500) * 1.5
    ordered = np.sort(values)
    exact = EmpiricalDistribution(values, max_knots=len(values))
    np.testing.assert_array_equal(exact.count_le(points), np.searchsorted(ordered, points, side="right"))
    np.testing.assert_array_equal(exact.count_ge(points), len(values) - np.searchsorted(ordered, points, side="left"))
    thinned = EmpiricalDistribution(values, max_knots=500)
    assert not thinned.exact and thinned.size <= 500
    assert np.abs(thinned.count_le(points) - exact.count_le(points)).max() <= 2 * len(values) / 500
    assert np.abs(thinned.count_ge(points) - exact.count_ge(points)).max() <= 2 * len(values) / 500
    assert thinned.count_le(np.array([-99.0, 99.0])).tolist() == [0, len(values)]


@pytest.fixture
def searched(monkeypatch):
    """The sizes of the arrays np.searchsorted and np.interp search, while a row is served."""
    sizes = []
    for name in ("searchsorted", "interp"):
        real = getattr(np, name)

        def spy(*args, real=real, name=name, **kwargs):
            sizes.append(len(args[0]) if name == "searchsorted" else len(args[1]))
            return real(*args, **kwargs)

        monkeypatch.setattr(np, name, spy)
    return sizes


@pytest.mark.parametrize("model", ["ecod", "copod"])
def test_a_served_rows_work_does_not_grow_with_the_training_rows(model, searched):
    rng = np.random.default_rng(3)
    row = rng.normal(size=(1, 4))
    work, size = {}, {}
    for n in (10_000, 80_000):
        detector = get(model).build({}, 0.1, 0).fit(rng.normal(size=(n, 4)))
        searched.clear()
        detector.decision_function(row)
        work[n], size[n] = list(searched), pickled_bytes(detector)
    # Two searches per column, in tables of at most MAX_KNOTS knots (the rows: 10,000 and 80,000 distinct values).
    assert len(work[10_000]) == len(work[80_000]) == 8 and max(work[10_000] + work[80_000]) <= MAX_KNOTS
    assert size[80_000] < 5 * 3 * MAX_KNOTS * 8 + 10_000  # 4 columns and the scores, 3 arrays each: no training rows inside


def test_a_pickled_model_leaves_its_training_rows_out_and_scores_the_same():
    rng = np.random.default_rng(4)
    sizes = {}
    for n in (20_000, 80_000):
        X = rng.normal(size=(n, 5))
        ensemble = RankEnsemble(["iforest", "hbos", "ecod"], member_params=[{"n_estimators": 20}, {}, {}], random_state=0).fit(X)
        buffer = io.BytesIO()
        joblib.dump(ensemble, buffer)
        sizes[n] = buffer.tell()
        buffer.seek(0)
        loaded = joblib.load(buffer)
        assert not hasattr(loaded, "decision_scores_") and not hasattr(loaded.detectors_[0], "labels_")
        np.testing.assert_array_equal(loaded.decision_function(X[:50]), ensemble.decision_function(X[:50]))
        np.testing.assert_array_equal(loaded.predict_proba(X[:50]), ensemble.predict_proba(X[:50]))
    assert sizes[80_000] < 1.25 * sizes[20_000]  # the 60,000 more rows alone are 2.4 MB


def test_reference_keeping_detectors_fit_on_a_bounded_seeded_sample():
    X = np.random.default_rng(5).normal(size=(3_000, 4))
    detector = get("knn").build({"reference_rows": 500}, 0.1, 7).fit(X)
    sample = reference_rows(len(X), 500, 7)
    assert detector.estimator_.neigh_.n_samples_fit_ == 500  # the neighbour index holds the sample only
    alone = KNN(contamination=0.1).fit(X[sample])
    np.testing.assert_allclose(detector.decision_scores_[sample], alone.decision_scores_)
    rest = np.setdiff1d(np.arange(len(X)), sample)
    np.testing.assert_allclose(detector.decision_scores_[rest], alone.decision_function(X[rest]))
    assert len(detector.decision_scores_) == len(X)
    every_row = get("knn").build({"reference_rows": None}, 0.1, 7).fit(X)
    assert every_row.estimator_.neigh_.n_samples_fit_ == 3_000
    np.testing.assert_allclose(every_row.decision_scores_, KNN(contamination=0.1).fit(X).decision_scores_)


def test_scikit_learns_lof_keeps_the_bounded_sample_too():
    X = np.random.default_rng(8).normal(size=(3_000, 4))
    detector = get("sk_lof").build({"reference_rows": 400}, 0.1, 3).fit(X)
    assert detector.estimator_.n_samples_fit_ == 400 and len(detector.decision_scores_) == len(X)
    sample = reference_rows(len(X), 400, 3)
    rest = np.setdiff1d(np.arange(len(X)), sample)
    np.testing.assert_allclose(detector.decision_scores_[rest], -detector.estimator_.score_samples(X[rest]))


def test_the_size_check_names_the_part_that_makes_a_model_large(tmp_path):
    X = np.random.default_rng(6).normal(size=(20_000, 5))
    members = RankEnsemble(["iforest", "knn"], member_params=[{"n_estimators": 10}, {"reference_rows": None}], random_state=0)
    pipeline = Pipeline([("preprocess", StandardScaler()), ("detector", members)]).fit(X)
    path = tmp_path / "pipeline.joblib"
    joblib.dump(pipeline, path)
    small = model_size.check(path, limit_mb=50)
    assert small.warning is None and small.parts_mb == {} and small.mb == pytest.approx(path.stat().st_size / 2**20, abs=1e-3)
    large = model_size.check(path, limit_mb=0.5)  # KNN keeps all 20,000 rows: 0.8 MB, and its index
    assert set(large.parts_mb) == {"preprocess", "detector member 0 (iforest)", "detector member 1 (knn)"}
    assert max(large.parts_mb, key=large.parts_mb.get) == "detector member 1 (knn)"
    assert "largest part is detector member 1 (knn)" in large.warning and "registry.max_model_mb (0.5 MB)" in large.warning


@pytest.mark.parametrize("n_bins", [5, 10, 30])
def test_hbos_scores_as_pyod_does_without_compiling(n_bins):
    X, _ = adbench("cardio")
    train, new = X[:1500], X[1500:].copy()
    new[:5] = new[:5] * 3 - 1  # values beyond the histograms, far and near
    new[5:10] = train.max(axis=0) + 1e-3
    new[10:15] = train.min(axis=0) - 1e-3
    detector = get("hbos").build({"n_bins": n_bins}, 0.1, 0).fit(train)
    np.testing.assert_array_equal(detector.decision_function(new), detector.estimator_.decision_function(new))
    np.testing.assert_array_equal(detector.decision_function(new[:1]), detector.estimator_.decision_function(new[:1]))
