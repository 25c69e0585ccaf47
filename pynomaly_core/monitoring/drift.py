"""Drift between a batch and the reference logged with the model: features, scores, alert rate.

Pure functions of data frames and arrays; the caller logs and acts on the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..config import MonitoringConfig


def dataset_drift_share(n_columns: int) -> float:
    """Evidently's dataset drift fires when at least this share of columns drift: one column, as the verdict's feature signal."""
    return 1.0 / n_columns


@dataclass
class FeatureDrift:
    drifted_columns: list[str]
    p_values: dict[str, float]
    threshold: float  # per-column K-S p-value threshold (Bonferroni-corrected)
    snapshot: object = field(repr=False)  # the Evidently snapshot, for its HTML report

    def save_html(self, path: str | Path) -> Path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.snapshot.save_html(str(path))
        return Path(path)


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], alpha: float) -> FeatureDrift:
    """Evidently's DataDriftPreset with a K-S test per column at alpha / len(columns).

    The correction keeps the chance that an unchanged batch flags any column near `alpha`;
    Evidently's default (0.05 per column) flags one column in four on an unchanged 30-column batch.
    The report's dataset-level rule is set to the verdict's: dataset drift when one column drifts
    (Evidently's default, half of the columns, said "not detected" beside a verdict of drift).
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    threshold = alpha / len(columns)
    report = Report([DataDriftPreset(columns=columns, method="ks", threshold=threshold, drift_share=dataset_drift_share(len(columns)))],
                    include_tests=True)
    snapshot = report.run(current_data=current[columns].reset_index(drop=True), reference_data=reference[columns].reset_index(drop=True))
    p_values, drifted = {}, []
    for metric in snapshot.dict()["metrics"]:
        column = metric["config"].get("column")
        if column is not None:
            p_values[column] = float(metric["value"])
            if p_values[column] < threshold:
                drifted.append(column)
    return FeatureDrift(drifted, p_values, threshold, snapshot)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's deciles (open-ended outer bins).

    Not Evidently's PSI: it bins reference and batch together into equal-width bins, so one
    extreme score hides a shift of the rest (tests/test_drift.py), and its value depends on
    the batch's range; `monitoring.score_psi` is a threshold on this decile form."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1))[1:-1])
    ref_share = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1) / len(reference)
    cur_share = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1) / len(current)
    ref_share, cur_share = np.clip(ref_share, 1e-4, None), np.clip(cur_share, 1e-4, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def score_drift(reference: np.ndarray, current: np.ndarray) -> dict:
    test = stats.ks_2samp(reference, current)
    return {
        "ks_statistic": float(test.statistic),
        "ks_p_value": float(test.pvalue),
        "psi": psi(np.asarray(reference), np.asarray(current)),
        "reference_mean": float(np.mean(reference)),
        "batch_mean": float(np.mean(current)),
    }


def alert_rate(n_alerts: int, n_rows: int, reference_alerts: int, reference_rows: int) -> dict:
    """Fisher's exact test of the batch's anomaly share against the drift reference's.

    The reference's share is what the model flags on rows it did not see, whatever set the
    threshold (`train.contamination` or `threshold.target_fpr`); a two-sample test, because that
    share is itself estimated from a few hundred rows.
    """
    table = [[n_alerts, n_rows - n_alerts], [reference_alerts, reference_rows - reference_alerts]]
    return {
        "n_alerts": int(n_alerts),
        "n_rows": int(n_rows),
        "observed": n_alerts / n_rows,
        "expected": reference_alerts / reference_rows,
        "reference_rows": int(reference_rows),
        "p_value": float(stats.fisher_exact(table).pvalue),
    }


@dataclass
class Verdict:
    drift_detected: bool
    reasons: list[str]
    signals: list[str]  # which of features / scores / alert_rate fired
    retrain: bool


def decide(features: FeatureDrift | None, scores: dict, alerts: dict, cfg: MonitoringConfig) -> Verdict:
    """Each signal that crosses its threshold adds a reason; retraining is due when one of `retrain_on` fired."""
    reasons, signals = [], []
    if features is not None and features.drifted_columns:
        signals.append("features")
        reasons.append(
            f"feature drift in {len(features.drifted_columns)} column(s): {', '.join(features.drifted_columns)} "
            f"(K-S p < {features.threshold:.2g})"
        )
    score_reasons = []
    if scores["ks_p_value"] < cfg.score_alpha:
        score_reasons.append(f"K-S p={scores['ks_p_value']:.2g} < {cfg.score_alpha}")
    if scores["psi"] > cfg.score_psi:
        score_reasons.append(f"PSI={scores['psi']:.3f} > {cfg.score_psi}")
    if score_reasons:
        signals.append("scores")
        reasons.append("score drift: " + ", ".join(score_reasons))
    if alerts["p_value"] < cfg.alert_rate_alpha:
        signals.append("alert_rate")
        reasons.append(
            f"alert rate {alerts['observed']:.1%} vs expected {alerts['expected']:.1%} "
            f"(Fisher p={alerts['p_value']:.2g} < {cfg.alert_rate_alpha})"
        )
    return Verdict(bool(signals), reasons, signals, any(s in cfg.retrain_on for s in signals))


def rule(cfg: MonitoringConfig, n_columns: int) -> list[str]:
    """The verdict's rule in words: drift when any of these holds (what `decide` checks)."""
    return [
        f"a feature column's K-S test gives p < {cfg.feature_alpha} / {n_columns} columns = {cfg.feature_alpha / n_columns:.2g} "
        "(Evidently's report counts dataset drift from one such column too)",
        f"the scores' K-S test gives p < {cfg.score_alpha}, or their PSI against the reference exceeds {cfg.score_psi}",
        f"the alert rate differs from the reference's by Fisher's exact test at p < {cfg.alert_rate_alpha}",
    ]
