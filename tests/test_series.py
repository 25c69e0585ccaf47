"""Series input and the series detectors, on the real sunspot series; end to end through the stages."""

import io

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pynomaly_core import stages
from pynomaly_core.config import load_config
from pynomaly_core.detectors.registry import REGISTRY, find
from pynomaly_core.data.series import series_windows
from pynomaly_core.errors import DataError
from pynomaly_core.data.preprocessing import features
from tests.conftest import ROOT

WINDOW = 11


@pytest.fixture(scope="module")
def sunspots():
    return pd.read_csv(ROOT / "data" / "raw" / "sunspots.csv")


@pytest.fixture(scope="module")
def spiked(sunspots):
    """Train on 1700-1899; test on 1900-2008 with a burst (x4 + 100) in 4 of its years."""
    frame = sunspots.copy()
    years = [1925, 1951, 1977, 1996]
    hit = frame.year.str[:4].astype(int).isin(years)
    frame.loc[hit, "sunspots"] = frame.loc[hit, "sunspots"] * 4 + 100
    windows = series_windows(frame, timestamp="year", value="sunspots", window=WINDOW)
    X = windows.drop(columns="year").to_numpy()
    ends = windows.year.dt.year.to_numpy()
    train, test = ends < 1900, ends >= 1900
    scale = X[train].std()
    ending = np.isin(ends[test], years).astype(int)
    holding = np.array([any(end - WINDOW < y <= end for y in years) for end in ends[test]]).astype(int)
    return X[train] / scale, X[test] / scale, {"ending": ending, "holding": holding}


# Subsequence detectors flag every window that holds a burst; point detectors (forecast
# residual, spectral residual) flag the window that ends at it.
SUBSEQUENCE = {"mp_discord", "kshape"}


def test_windows_are_sorted_and_one_row_per_timestamp(sunspots):
    shuffled = sunspots.sample(frac=1, random_state=0)
    windows = series_windows(shuffled, timestamp="year", value="sunspots", window=WINDOW)
    assert len(windows) == len(sunspots) - WINDOW + 1
    assert list(windows.columns) == ["year", *[f"lag_{k}" for k in range(WINDOW - 1, -1, -1)]]
    first = windows.iloc[0]
    assert str(first.year.date()) == "1710-12-31"
    np.testing.assert_array_equal(first.iloc[1:].to_numpy(dtype=float), sunspots.sunspots.to_numpy()[:WINDOW])


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="sunspots"), r"missing column\(s\) \['sunspots'\]"),
    (lambda f: f.assign(year=f.year.where(f.index != 3, "not a date")), r"1 row\(s\) with unreadable 'year', e.g. rows \[3\]"),
    (lambda f: f.assign(sunspots=f.sunspots.where(f.index != 7)), r"missing or non-numeric 'sunspots', e.g. rows \[7\]"),
    (lambda f: pd.concat([f, f.iloc[[5]]]), r"duplicate 'year' value\(s\) \['1705-12-31"),
])
def test_bad_series_input_is_a_clear_error(sunspots, change, message):
    with pytest.raises(DataError, match=message):
        series_windows(change(sunspots.copy()), timestamp="year", value="sunspots", window=WINDOW)


@pytest.mark.parametrize("name", sorted(s.name for s in find(input="series")))
def test_series_detector_contract(name, spiked):
    X_train, X_test, labels = spiked
    y_test = labels["holding" if name in SUBSEQUENCE else "ending"]
    spec = REGISTRY[name]
    detector = spec.build(spec.test_params, contamination=0.1, random_state=0).fit(X_train)
    assert detector.decision_scores_.shape == (len(X_train),) and np.isfinite(detector.decision_scores_).all()
    scores = detector.decision_function(X_test)
    assert roc_auc_score(y_test, scores) > 0.9, f"{name} misses the injected bursts"
    again = spec.build(spec.test_params, contamination=0.1, random_state=0).fit(X_train).decision_function(X_test)
    np.testing.assert_array_equal(scores, again)
    buffer = io.BytesIO()
    joblib.dump(detector, buffer)
    buffer.seek(0)
    np.testing.assert_allclose(joblib.load(buffer).decision_function(X_test), scores, atol=1e-6, rtol=0)


def test_series_config_runs_through_the_stages_and_reloads_from_the_registry(workdir):
    config = load_config(ROOT / "configs" / "sunspots.yaml")
    config = config.model_copy(update={"train": config.train.model_copy(update={
        "detectors": ["mp_discord", "spectral_residual"], "n_trials": 2, "cv_folds": 2, "progress_bar": False})})
    assert list(config.data.columns)[0] == "lag_10" and config.data.id_column == "year"
    assert stages.validate(config).n_valid == 309 - WINDOW + 1
    stages.preprocess(config)
    test = pd.read_parquet(config.paths.test)
    assert test.year.min() > pd.read_parquet(config.paths.train).year.max()  # time order kept
    trained = stages.train(config)
    assert trained.detector in {"mp_discord", "spectral_residual"}
    stages.evaluate(config)
    registered = stages.register(config)
    model = mlflow.pyfunc.load_model(registered.model_uri)
    expected = joblib.load(config.paths.model).decision_function(features(test, config.data))
    np.testing.assert_allclose(model.predict(test[list(config.data.columns)])["score"].to_numpy(), expected, atol=1e-6, rtol=0)
