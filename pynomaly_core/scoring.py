"""Score a file with a registered model, validating it with the schema the model was trained on."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from .config import TrackingConfig
from .io import DataError, TableWriter, iter_table
from .tracking import absolute_sqlite, tracking_uri
from .validation import ROW_COLUMN, validate


def rejected_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}.rejected.csv")


def score_file(model_uri: str, input_path: str | Path, output_path: str | Path, batch_rows: int = 100_000) -> dict:
    """Write the valid input rows plus `score` and `is_anomaly` to `output_path`; bad rows go beside it.

    The input streams through `batch_rows` at a time (Parquet row groups via pyarrow), each batch
    validated, scored and appended, so memory stays flat however large the file.
    """
    mlflow.set_tracking_uri(absolute_sqlite(tracking_uri(TrackingConfig())))
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as err:
        raise DataError(f"cannot load model {model_uri}: {getattr(err, 'message', err)}") from None
    data_config = model.unwrap_python_model().data_config
    counts = {"n_rows": 0, "n_valid": 0, "n_rejected": 0, "n_anomalies": 0}
    rejected_file = rejected_path(output_path)
    with TableWriter(output_path) as scored_out, TableWriter(rejected_file) as rejected_out:
        for batch in iter_table(input_path, batch_rows):
            result = validate(batch, data_config, with_label=False, source=str(input_path))
            if len(result.rejected):
                rejected_out.write(result.rejected.assign(**{ROW_COLUMN: result.rejected[ROW_COLUMN] + counts["n_rows"]}))
            counts["n_rows"] += result.n_rows
            counts["n_rejected"] += len(result.rejected)
            if len(result.valid) == 0:
                continue
            predictions = model.predict(result.valid[list(data_config.columns)])
            scored_out.write(result.valid.assign(score=predictions["score"].to_numpy(), is_anomaly=predictions["is_anomaly"].to_numpy()))
            counts["n_valid"] += len(result.valid)
            counts["n_anomalies"] += int(predictions["is_anomaly"].sum())
    if counts["n_valid"] == 0:
        Path(output_path).unlink(missing_ok=True)
        raise DataError(f"{input_path}: no valid rows to score; see {rejected_file}")
    report = {**counts, "rejected_share": round(counts["n_rejected"] / counts["n_rows"], 6), "output": str(output_path)}
    if counts["n_rejected"]:
        report["rejected_file"] = str(rejected_file)
    return report
