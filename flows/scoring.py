"""The scoring flow: validate a new batch, score it with the champion, write and log the results."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import artifact_key
from flows.training import DEFAULT_CONFIG
from pynomaly_core.config import EngineOptions, PipelineConfig, ReadOptions, load_config
from pynomaly_core.monitoring.results import ScoreResult
from tasks import monitoring as stages


def _markdown(result: ScoreResult) -> str:
    rows = [("batch", result.batch), ("model", result.model_uri), ("rows", result.n_rows), ("valid", result.n_valid),
            ("rejected", f"{result.n_rejected} ({result.rejected_file or '-'})"), ("anomalies", result.n_anomalies),
            ("alert rate", f"{result.alert_rate:.1%}"), ("scored rows", result.output), ("MLflow run", result.run_id)]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


@flow(name="scoring", log_prints=True)
def scoring_flow(batch: str, config: PipelineConfig | None = None, read: ReadOptions = ReadOptions(),
                 engine: EngineOptions = EngineOptions()) -> ScoreResult:
    """Score one batch (any table format; see pynomaly_core.io) with models:/NAME@champion, in this
    process or, with `engine`, a Parquet batch on a Spark or Dask cluster."""
    config = config or load_config(DEFAULT_CONFIG)
    result = stages.score_batch(config, batch, read, engine)
    create_markdown_artifact(_markdown(result), key=artifact_key(config.name, "scoring"), description="Scored batch")
    return result
