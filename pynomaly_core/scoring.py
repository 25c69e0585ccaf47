"""Score a file with a registered model, validating it with the schema the model was trained on."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from .config import TrackingConfig
from .io import DataError, read_table, write_table
from .tracking import absolute_sqlite, tracking_uri
from .validation import ValidationResult, validate


def rejected_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}.rejected.csv")


def load_model(model_uri: str, tracking: TrackingConfig | None = None):
    mlflow.set_tracking_uri(absolute_sqlite(tracking_uri(tracking or TrackingConfig())))
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as err:
        raise DataError(f"cannot load model {model_uri}: {getattr(err, 'message', err)}") from None


def score_frame(model, frame: pd.DataFrame, source: str) -> tuple[ValidationResult, pd.DataFrame]:
    """Validate `frame` with the model's training schema; the valid rows come back with `score` and `is_anomaly`."""
    data_config = model.unwrap_python_model().data_config
    result = validate(frame, data_config, with_label=False, source=source)
    if len(result.valid) == 0:
        return result, result.valid.assign(score=pd.Series(dtype="float64"), is_anomaly=pd.Series(dtype="int64"))
    predictions = model.predict(result.valid[list(data_config.columns)])
    return result, result.valid.assign(score=predictions["score"].to_numpy(), is_anomaly=predictions["is_anomaly"].to_numpy())


def score_file(model_uri: str, input_path: str | Path, output_path: str | Path) -> dict:
    """Write the valid input rows plus `score` and `is_anomaly` to `output_path`; bad rows go beside it."""
    model = load_model(model_uri)
    result, scored = score_frame(model, read_table(input_path), str(input_path))
    report = {**result.report(), "output": str(output_path)}
    if len(result.rejected):
        write_table(result.rejected, rejected_path(output_path))
        report["rejected_file"] = str(rejected_path(output_path))
    if len(result.valid) == 0:
        raise DataError(f"{input_path}: no valid rows to score; see {rejected_path(output_path)}")
    write_table(scored, output_path)
    report["n_anomalies"] = int(scored["is_anomaly"].sum())
    return report


def append_to_store(scored: pd.DataFrame, url: str, table: str) -> None:
    """Append scored rows to a SQL table (created on first use) through SQLAlchemy."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            scored.to_sql(table, connection, if_exists="append", index=False)
    finally:
        engine.dispose()
