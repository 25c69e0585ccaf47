"""The MLflow pyfunc model: preprocessor + detector + threshold in one servable artifact.

Logged as "models from code": MLflow stores this file with the model and runs it on load.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import mlflow
import mlflow.pyfunc
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.types import ColSpec, Schema

from pynomaly_core.scoring.batching import GroupScorer
from pynomaly_core.config import DataConfig
from pynomaly_core.errors import DataError
from pynomaly_core.scoring.files import score_rows
from pynomaly_core.data.validation import ERRORS_COLUMN, ROW_COLUMN, validate

OUTPUT_SCHEMA = Schema([ColSpec("double", "score"), ColSpec("long", "is_anomaly")])


def model_artifacts(
    pipeline_path: str | Path, data_config: DataConfig, folder: str | Path, reference: pd.DataFrame | None = None
) -> dict[str, str]:
    """The files the model is logged with: the fitted pipeline, the schema its input must meet and
    the drift reference (held-out rows with their scores and alerts)."""
    schema = Path(folder) / "data_config.yaml"
    schema.write_text(yaml.safe_dump(data_config.model_dump(mode="json"), sort_keys=False))
    artifacts = {"pipeline": str(pipeline_path), "data_config": str(schema)}
    if reference is not None:
        reference.to_parquet(Path(folder) / "reference.parquet", index=False)
        artifacts["reference"] = str(Path(folder) / "reference.parquet")
    return artifacts


class AnomalyModel(mlflow.pyfunc.PythonModel):
    """Scores rows with the training pipeline; outputs `score` (higher = more anomalous) and `is_anomaly`."""

    def load_context(self, context):
        self.pipeline = joblib.load(context.artifacts["pipeline"])
        with open(context.artifacts["data_config"]) as handle:
            self.data_config = DataConfig.model_validate(yaml.safe_load(handle))
        # Versions registered before monitoring existed have no reference.
        self.reference_path = context.artifacts.get("reference")
        # Concurrent requests (a served model) are validated and scored together; a request with a
        # rejected row fails its group, which is then done request by request (GroupScorer), so
        # each gets its own rows' errors. A graph's nodes are scored with the other nodes of their
        # own request, so they are not grouped.
        self.score = GroupScorer(self._score) if self.data_config.graph is None else self._score

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Validate the rows with the training schema, then score them. Any rejected row fails the
        whole request with an MlflowException naming each row and column: `mlflow models serve`
        answers it with 400 and the message."""
        return self.score(pd.DataFrame(model_input))

    def _score(self, rows: pd.DataFrame) -> pd.DataFrame:
        try:
            result = validate(rows, self.data_config, with_label=False, source="request")
        except DataError as err:
            raise MlflowException.invalid_parameter_value(str(err)) from None
        if len(result.rejected):
            rejected = result.rejected[[ROW_COLUMN, ERRORS_COLUMN]].head(20).itertuples(index=False)
            raise MlflowException.invalid_parameter_value(
                f"request: {len(result.rejected)} of {result.n_rows} rows rejected, none scored:"
                + "".join(f"\nrow {row}: {errors}" for row, errors in rejected)
            )
        return score_rows(self.pipeline, self.data_config, result.valid)


mlflow.models.set_model(AnomalyModel())
