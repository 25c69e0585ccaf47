"""The monitoring stages: score a new batch with the champion, then judge it for drift.

Like `stages`, each function reads and writes files, logs an MLflow run and returns a result;
the Prefect flows in `flows/scoring.py` and `flows/monitoring.py` wrap them and act on the verdict.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

from . import drift
from ..scoring import provenance
from ..tracking import store as tracking
from ..config import EngineOptions, PipelineConfig, ReadOptions
from ..errors import DataError
from ..data.io import iter_table, read_table, table_stem, write_table
from ..scoring.files import append_to_store, keep_record, load_model, rejected_path, remove_stale, score_frame
from ..scoring import score_with_engine
from ..tracking.champion import champion_version_uri
from .results import MonitorResult, ScoreResult


def score_batch(cfg: PipelineConfig, batch: str, options: ReadOptions | None = None, engine: EngineOptions | None = None) -> ScoreResult:
    """Validate `batch` (format by suffix or `options`) with the training schema, score it with the champion, write the scored rows.

    `engine` (default: this process) scores a Parquet batch on Spark or Dask instead; the scored rows are then a Parquet folder.
    """
    tracking.setup(cfg.tracking)
    model_uri = champion_version_uri(cfg.registry.model_name)
    output = Path(cfg.monitoring.scored_dir) / f"{table_stem(batch)}.parquet"
    if engine is not None and engine.name != "pandas":
        return _score_on_cluster(cfg, batch, options, engine, model_uri, output)
    model = load_model(model_uri, cfg.tracking)
    frame = read_table(batch, options=options)
    result, scored = score_frame(model, frame, batch)
    rejected_file = None
    if len(result.rejected):
        rejected_file = str(write_table(result.rejected, rejected_path(output)))
    else:
        remove_stale(rejected_path(output))
    if len(result.valid) == 0:
        raise DataError(f"{batch}: no valid rows to score; see {rejected_file}")
    record = provenance.describe(model_uri, model.unwrap_python_model())
    write_table(scored, output, provenance.metadata(record))
    keep_record(output, record)
    if cfg.monitoring.store_url:
        append_to_store(scored.assign(batch=str(batch), model_uri=model_uri), cfg.monitoring.store_url, cfg.monitoring.store_table)
    counts = {**result.report(include_share=False), "n_anomalies": int(scored["is_anomaly"].sum())}
    dataset = mlflow.data.from_pandas(frame, source=tracking.table_source(batch), name=table_stem(batch))
    return _logged(cfg, batch, model_uri, counts, str(output), rejected_file, dataset)


def _score_on_cluster(cfg: PipelineConfig, batch: str, options, engine: EngineOptions, model_uri: str, output: Path) -> ScoreResult:
    """`score_batch` on Spark or Dask: the engine writes the outputs; the store gets the scored rows batch by batch."""
    report = score_with_engine(engine, model_uri, batch, output, options=options)
    if report["n_valid"] == 0:
        raise DataError(f"{batch}: no valid rows to score; see {report.get('rejected_file')}")
    if cfg.monitoring.store_url:
        for scored in iter_table(output):
            append_to_store(scored.assign(batch=str(batch), model_uri=model_uri), cfg.monitoring.store_url, cfg.monitoring.store_table)
    counts = {k: report[k] for k in ("n_rows", "n_valid", "n_rejected", "n_anomalies")}
    return _logged(cfg, batch, model_uri, counts, str(output), report.get("rejected_file"), None)


def _logged(cfg: PipelineConfig, batch: str, model_uri: str, counts: dict, output: str, rejected_file: str | None, dataset) -> ScoreResult:
    """The scoring run in MLflow (counts, alert rate, the quarantined rows, the batch as its input) and its result."""
    alert_rate = counts["n_anomalies"] / counts["n_valid"]
    with mlflow.start_run(run_name=f"{cfg.name}-scoring") as run:
        mlflow.set_tags({"pynomaly.stage": "scoring", "model_uri": model_uri, "batch": str(batch)})
        if dataset is not None:
            mlflow.log_input(dataset, context="scoring")
        mlflow.log_metrics({**counts, "rejected_share": round(counts["n_rejected"] / counts["n_rows"], 6), "alert_rate": alert_rate})
        if rejected_file:
            mlflow.log_artifact(rejected_file, "quarantine")
    return ScoreResult(
        batch=str(batch), model_uri=model_uri, **counts, alert_rate=alert_rate, output=output, rejected_file=rejected_file,
        store_table=cfg.monitoring.store_table if cfg.monitoring.store_url else None, run_id=run.info.run_id,
    )


def monitor_drift(cfg: PipelineConfig, scoring: ScoreResult) -> MonitorResult:
    """Compare the scored batch with the reference logged with its model; log the verdict and the report."""
    tracking.setup(cfg.tracking)
    model = load_model(scoring.model_uri, cfg.tracking)
    python_model = model.unwrap_python_model()
    if python_model.reference_path is None:
        raise DataError(f"{scoring.model_uri} was registered without a drift reference; register it again")
    reference = pd.read_parquet(python_model.reference_path)
    batch = pd.read_parquet(scoring.output)
    columns = list(python_model.data_config.columns)
    monitoring = cfg.monitoring

    alerts = drift.alert_rate(int(batch["is_anomaly"].sum()), len(batch), int(reference["is_anomaly"].sum()), len(reference))
    scores = drift.score_drift(reference["score"].to_numpy(), batch["score"].to_numpy())
    judged = len(batch) >= monitoring.min_batch_rows
    features = drift.feature_drift(reference, batch, columns, monitoring.feature_alpha) if judged else None
    verdict = drift.decide(features, scores, alerts, monitoring) if judged else drift.Verdict(False, [], [], False)

    report = report_uri = None
    with mlflow.start_run(run_name=f"{cfg.name}-monitoring") as run:
        mlflow.set_tags({
            "pynomaly.stage": "monitoring",
            "model_uri": scoring.model_uri,
            "batch": scoring.batch,
            "scoring_run_id": scoring.run_id,
            "drift_detected": str(verdict.drift_detected).lower(),
            "drift_reasons": "; ".join(verdict.reasons)[:5000] or "none",
        })
        mlflow.log_metrics({
            "n_rows": len(batch),
            "n_drifted_columns": len(features.drifted_columns) if features else 0,
            "score_ks_statistic": scores["ks_statistic"],
            "score_ks_p_value": scores["ks_p_value"],
            "score_psi": scores["psi"],
            "alert_rate": alerts["observed"],
            "alert_rate_p_value": alerts["p_value"],
            "alert_rate_expected": alerts["expected"],
            "drift_share": len(features.drifted_columns) / len(columns) if features else 0.0,
            "drift_detected": float(verdict.drift_detected),
        })
        if features is not None:
            report = str(features.save_html(Path(monitoring.scored_dir) / f"{table_stem(scoring.batch)}.drift.html"))
            mlflow.log_artifact(report, "monitoring")
            report_uri = mlflow.get_artifact_uri(f"monitoring/{Path(report).name}")
        result = MonitorResult(
            batch=scoring.batch,
            model_uri=scoring.model_uri,
            n_rows=len(batch),
            drift_detected=verdict.drift_detected,
            drifted_columns=features.drifted_columns if features else [],
            feature_p_values=features.p_values if features else {},
            score_drift=scores,
            alert_rate=alerts,
            reasons=verdict.reasons or ([] if judged else [f"{len(batch)} rows < monitoring.min_batch_rows; not judged"]),
            signals=verdict.signals,
            retrain_due=verdict.retrain,
            judged=judged,
            report=report,
            report_uri=report_uri,
            run_id=run.info.run_id,
        )
        mlflow.log_dict(result.model_dump(mode="json"), "monitoring/verdict.json")
    return result


def record_retraining(cfg: PipelineConfig, monitor_run_id: str, retraining: dict) -> None:
    """Note on the monitoring run how retraining was requested, and why."""
    tracking.setup(cfg.tracking)
    client = MlflowClient()
    for key, value in retraining.items():
        client.set_tag(monitor_run_id, f"retrain.{key}", str(value)[:5000])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "retraining.json"
        path.write_text(json.dumps(retraining, indent=2))
        client.log_artifact(monitor_run_id, str(path), "monitoring")
