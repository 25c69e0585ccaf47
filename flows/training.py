"""The training flow: validate -> preprocess -> train (Optuna) -> evaluate -> explain -> register."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import artifact_key
from flows.tuning import tune_in_parallel
from pynomaly_core.config import PipelineConfig, load_config
from pynomaly_core.stages import parallel_search
from pynomaly_core.summary import TrainingSummary
from tasks import training as stages

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@flow(name="training", log_prints=True)
def training_flow(config: PipelineConfig | None = None) -> TrainingSummary:
    """Train, evaluate, explain and register an anomaly detector for the configured table (default: the demo's)."""
    config = config or load_config(DEFAULT_CONFIG)  # read when the flow runs, not when the module is imported
    validated = stages.validate(config)
    prepared = stages.preprocess(config)
    if parallel_search(config):
        tune_in_parallel(config)  # then `train` finds the study full and only picks the best
    trained = stages.train(config)
    evaluated = stages.evaluate(config)
    explained = stages.explain(config)
    registered = stages.register(config)
    summary = TrainingSummary(
        validation=validated, preprocessing=prepared, training=trained, evaluation=evaluated, explanation=explained, registration=registered
    )
    create_markdown_artifact(summary.markdown(), key=artifact_key(config.name, "training-summary"), description="Training summary")
    return summary


if __name__ == "__main__":
    training_flow()
