"""Score a file with a registered model, validating it with the schema the model was trained on."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from .config import TrackingConfig
from .io import DataError, TableWriter, iter_table
from .tracking import absolute_sqlite, tracking_uri
from .validation import ROW_COLUMN, ValidationResult, validate


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


def score_file(model_uri: str, input_path: str | Path, output_path: str | Path, batch_rows: int = 100_000) -> dict:
    """Write the valid input rows plus `score` and `is_anomaly` to `output_path`; bad rows go beside it.

    The input streams through `batch_rows` at a time (Parquet row groups via pyarrow), each batch
    validated, scored and appended, so memory stays flat however large the file.
    """
    model = load_model(model_uri)
    counts = {"n_rows": 0, "n_valid": 0, "n_rejected": 0, "n_anomalies": 0}
    rejected_file = rejected_path(output_path)
    with TableWriter(output_path) as scored_out, TableWriter(rejected_file) as rejected_out:
        for batch in iter_table(input_path, batch_rows):
            result, scored = score_frame(model, batch, str(input_path))
            if len(result.rejected):  # row numbers count from the start of the file, not the batch
                rejected_out.write(result.rejected.assign(**{ROW_COLUMN: result.rejected[ROW_COLUMN] + counts["n_rows"]}))
            counts["n_rows"] += result.n_rows
            counts["n_rejected"] += len(result.rejected)
            if len(scored):
                scored_out.write(scored)
                counts["n_valid"] += len(scored)
                counts["n_anomalies"] += int(scored["is_anomaly"].sum())
    if counts["n_valid"] == 0:
        Path(output_path).unlink(missing_ok=True)
        raise DataError(f"{input_path}: no valid rows to score; see {rejected_file}")
    report = {**counts, "rejected_share": round(counts["n_rejected"] / counts["n_rows"], 6), "output": str(output_path)}
    if counts["n_rejected"]:
        report["rejected_file"] = str(rejected_file)
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
