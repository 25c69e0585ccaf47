"""Score a file with a registered model, validating it with the schema the model was trained on."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from .config import TrackingConfig
from .io import DataError, read_table, write_table
from .tracking import absolute_sqlite, tracking_uri
from .validation import validate


def rejected_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}.rejected.csv")


def score_file(model_uri: str, input_path: str | Path, output_path: str | Path) -> dict:
    """Write the valid input rows plus `score` and `is_anomaly` to `output_path`; bad rows go beside it."""
    mlflow.set_tracking_uri(absolute_sqlite(tracking_uri(TrackingConfig())))
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as err:
        raise DataError(f"cannot load model {model_uri}: {getattr(err, 'message', err)}") from None
    data_config = model.unwrap_python_model().data_config
    result = validate(read_table(input_path), data_config, with_label=False, source=str(input_path))
    report = {**result.report(), "output": str(output_path)}
    if len(result.rejected):
        write_table(result.rejected, rejected_path(output_path))
        report["rejected_file"] = str(rejected_path(output_path))
    if len(result.valid) == 0:
        raise DataError(f"{input_path}: no valid rows to score; see {rejected_path(output_path)}")
    predictions = model.predict(result.valid[list(data_config.columns)])
    scored = result.valid.assign(score=predictions["score"].to_numpy(), is_anomaly=predictions["is_anomaly"].to_numpy())
    write_table(scored, output_path)
    report["n_anomalies"] = int(scored["is_anomaly"].sum())
    return report
