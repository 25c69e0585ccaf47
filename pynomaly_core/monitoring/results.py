"""What the monitoring stages return: plain data, so alerts and flows read it without importing a stage."""

from __future__ import annotations

from pydantic import BaseModel


class ScoreResult(BaseModel):
    batch: str
    model_uri: str  # the exact version, so monitoring compares with that version's reference
    n_rows: int
    n_valid: int
    n_rejected: int
    n_anomalies: int
    alert_rate: float
    output: str
    rejected_file: str | None
    store_table: str | None
    run_id: str


class MonitorResult(BaseModel):
    batch: str
    model_uri: str
    n_rows: int
    drift_detected: bool
    drifted_columns: list[str]
    feature_p_values: dict[str, float]
    score_drift: dict
    alert_rate: dict
    reasons: list[str]
    signals: list[str]
    retrain_due: bool
    judged: bool  # false when the batch was below monitoring.min_batch_rows
    report: str | None  # local path of the Evidently HTML report
    report_uri: str | None  # the same report as an MLflow artifact
    run_id: str
