"""The drift statistics on the demo data, without a model or a tracking store."""

import numpy as np
import pandas as pd
import pytest

from pynomaly_core.monitoring import drift
from pynomaly_core.config import MonitoringConfig
from tests.conftest import ROOT


def _benign():
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    return frame[frame["malignant"] == 0].drop(columns=["sample_id", "malignant"])


def _split(frame, seed):
    shuffled = frame.sample(frac=1, random_state=seed)
    return shuffled.iloc[:200].reset_index(drop=True), shuffled.iloc[200:].reset_index(drop=True)


def test_psi_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=2000)
    assert drift.psi(reference, rng.normal(size=2000)) < 0.02
    assert drift.psi(reference, rng.normal(1.0, 1.0, size=2000)) > 0.5
    # A constant reference leaves one bin; every value lands in it, so nothing drifted.
    assert drift.psi(np.zeros(100), np.zeros(50)) == pytest.approx(0.0)


def test_score_psi_keeps_the_reference_deciles_where_evidentlys_psi_misses_a_shift():
    """Why drift.psi is not Evidently's: Evidently bins the reference and the batch together into
    equal-width (Sturges) bins, so one extreme score squeezes every other into one bin."""
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(0)
    reference = rng.normal(size=2000)
    shifted = np.append(rng.normal(1.0, 1.0, size=1999), 1e6)  # shifted by 1 sd, and one outlier
    evidently_psi = _psi(pd.Series(reference), pd.Series(shifted), ColumnType.Numerical, 0.25)[0]
    assert drift.psi(reference, shifted) > 0.5
    assert evidently_psi < 0.01


def test_alert_rate_is_tested_against_the_reference_share():
    same = drift.alert_rate(10, 100, 50, 500)
    assert same["observed"] == same["expected"] == 0.1 and same["p_value"] == pytest.approx(1.0)
    assert drift.alert_rate(30, 100, 50, 500)["p_value"] < 1e-5
    assert drift.alert_rate(0, 100, 50, 500)["p_value"] < 1e-3  # a silent detector is drift too
    # The reference's share is an estimate: 6 % of a large batch against 8 of 171 reference rows
    # is within its error (a one-sample binomial test against 8/171 gives p < 1e-8).
    assert drift.alert_rate(600, 10_000, 8, 171)["p_value"] > 0.1


def test_unchanged_batches_rarely_raise_a_false_alarm():
    # Random halves of the same rows: with alpha=0.05 over 30 columns about one split in twenty
    # flags a column; Evidently's per-column default (0.05) would flag most of them.
    # (Evidently takes seconds per report here, hence only three splits.)
    benign = _benign()
    # The shifted-column case runs on a real model in test_monitoring.py.
    results = [drift.feature_drift(*_split(benign, seed), list(benign.columns), alpha=0.05) for seed in range(3)]
    assert sum(bool(r.drifted_columns) for r in results) <= 1, [r.drifted_columns for r in results]
    assert results[0].threshold == pytest.approx(0.05 / 30) and set(results[0].p_values) == set(benign.columns)


def test_decide_lists_reasons_and_retrains_only_on_configured_signals():
    shifted = drift.FeatureDrift(["mean_texture"], {"mean_texture": 1e-9, "mean_radius": 0.4}, 0.05 / 30, snapshot=None)
    calm_scores = {"ks_p_value": 0.5, "psi": 0.05}
    calm_alerts = drift.alert_rate(10, 100, 50, 500)

    verdict = drift.decide(shifted, calm_scores, calm_alerts, MonitoringConfig())
    assert verdict.drift_detected and verdict.retrain and verdict.signals == ["features"]
    assert "mean_texture" in verdict.reasons[0]

    only_alerts = MonitoringConfig(retrain_on=["alert_rate"])
    verdict = drift.decide(shifted, calm_scores, calm_alerts, only_alerts)
    assert verdict.drift_detected and not verdict.retrain

    verdict = drift.decide(None, {"ks_p_value": 0.001, "psi": 0.4}, drift.alert_rate(30, 100, 50, 500), only_alerts)
    assert verdict.signals == ["scores", "alert_rate"] and verdict.retrain
    assert "PSI=0.400 > 0.25" in verdict.reasons[0] and "alert rate 30.0% vs expected 10.0%" in verdict.reasons[1]

    assert drift.decide(None, calm_scores, calm_alerts, MonitoringConfig()) == drift.Verdict(False, [], [], False)


def _evidently_dataset_drift(features: drift.FeatureDrift) -> bool:
    """Evidently's dataset-level verdict, as its report headline shows it: the share-of-drifted-columns test failing."""
    [test] = [t for t in features.snapshot.dict()["tests"] if t["name"].startswith("Share of Drifted Columns")]
    return test["status"].value == "FAIL"


def test_evidently_dataset_drift_says_what_the_verdict_feature_rule_says():
    """One drifted column of thirty is drift for the verdict; Evidently's default rule (half the columns) said not."""
    verdicts = []
    for seed in (1, 2, 3):  # random splits: whether a column drifts by chance, both say the same
        reference, current = _split(_benign(), seed)
        columns = list(reference.columns)
        unchanged = drift.feature_drift(reference, current, columns, alpha=0.05)
        verdicts.append((bool(unchanged.drifted_columns), _evidently_dataset_drift(unchanged)))
    assert all(ours == evidently for ours, evidently in verdicts) and not all(ours for ours, _ in verdicts)
    shifted = current.assign(mean_texture=current["mean_texture"] + 3 * reference["mean_texture"].std())
    one = drift.feature_drift(reference, shifted, columns, alpha=0.05)
    assert one.drifted_columns == ["mean_texture"] and _evidently_dataset_drift(one)
    assert "1 column(s): mean_texture" in drift.decide(one, drift.score_drift(np.zeros(5), np.zeros(5)), drift.alert_rate(1, 50, 1, 50),
                                                     MonitoringConfig()).reasons[0]
