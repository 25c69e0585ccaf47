"""The monitoring flow: score a batch, compare it with the champion's reference, retrain on drift."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows import artifact_key
from flows.training import DEFAULT_CONFIG
from pynomaly_core.monitoring import alerts as notify
from pynomaly_core.config import PipelineConfig, ReadOptions, load_config
from pynomaly_core.monitoring.results import MonitorResult
from tasks import monitoring as stages


def _markdown(result: MonitorResult, retraining: dict | None) -> str:
    score, alerts = result.score_drift, result.alert_rate
    lines = [
        f"**drift detected: {result.drift_detected}** — batch `{result.batch}`, model `{result.model_uri}`, {result.n_rows} rows",
        "",
        *(f"- {reason}" for reason in result.reasons),
        "",
        "| check | value |", "|---|---|",
        f"| drifted columns | {', '.join(result.drifted_columns) or 'none'} |",
        f"| score K-S | {score['ks_statistic']:.3f} (p={score['ks_p_value']:.2g}) |",
        f"| score PSI | {score['psi']:.3f} |",
        f"| alert rate | {alerts['observed']:.1%} vs {alerts['expected']:.1%} (p={alerts['p_value']:.2g}) |",
        f"| retraining | {retraining['method'] + ': ' + retraining.get('flow_run_id', retraining.get('event_id') or '') if retraining else 'not requested'} |",
    ]
    return "\n".join(lines)


@flow(name="monitoring", log_prints=True)
def monitoring_flow(batch: str, config: PipelineConfig | None = None, read: ReadOptions = ReadOptions()) -> dict:
    """Score `batch` with the champion, measure feature, score and alert-rate drift, alert monitoring.notify
    when a check fired or the batch failed, request retraining when due."""
    config = config or load_config(DEFAULT_CONFIG)
    try:
        scored = stages.score_batch(config, batch, read)
    except Exception as err:
        if config.monitoring.notify:
            stages.alert(config, notify.failure_message(config, batch, err))
        raise
    result = stages.monitor_drift(config, scored)
    message = notify.drift_message(config, result)
    alert = stages.alert(config, message, result.run_id) if message and config.monitoring.notify else None
    retraining = stages.request_retraining(config, result) if result.retrain_due else None
    if result.report_uri:
        create_link_artifact(result.report_uri, link_text="Evidently data-drift report", key=artifact_key(config.name, "drift-report"))
    create_markdown_artifact(_markdown(result, retraining), key=artifact_key(config.name, "drift"), description="Drift verdict")
    return {
        "drift_detected": result.drift_detected,
        "drifted_columns": result.drifted_columns,
        "score_drift": result.score_drift,
        "alert_rate": result.alert_rate,
        "retrain_triggered": retraining is not None,
        "reasons": result.reasons,
        "retraining": retraining,
        "report": result.report,
        "report_uri": result.report_uri,
        "scored": scored.output,
        "rejected_file": scored.rejected_file,
        "mlflow_run_id": result.run_id,
        "alert": alert,
    }
