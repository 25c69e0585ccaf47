"""Score a file or a frame with a registered model, validating it with the schema the model was trained on."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException

from . import provenance
from ..config import NEIGHBORS, DataConfig, ReadOptions, TrackingConfig
from ..detectors.graph import with_neighbors
from ..data.io import BATCH_ROWS, TableWriter, iter_table, read_table
from ..errors import DataError
from ..data.preprocessing import features
from ..tracking.champion import pinned_uri
from ..tracking.store import store_uri, use_store
from ..data.validation import ROW_COLUMN, ValidationResult, validate


def rejected_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}.rejected.csv")


def remove_stale(path: str | Path) -> None:
    """Remove an earlier run's output at `path` (a file, or the folder Spark writes) that this run
    has no rows for, so that what lies beside the scored rows is always this run's."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _use_tracking(tracking: TrackingConfig | None) -> None:
    use_store(store_uri(tracking))


def load_model(model_uri: str, tracking: TrackingConfig | None = None):
    _use_tracking(tracking)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as err:
        raise DataError(f"cannot load model {model_uri}: {getattr(err, 'message', err)}") from None


def model_schema(model_uri: str, tracking: TrackingConfig | None = None) -> DataConfig:
    """The schema the model was trained on, read from its `data_config.yaml` (`model.model_artifacts`) alone: for
    a process that does not score (the Dask client), loading the whole model (its pipeline, MLflow's check of its
    requirements against this environment) took 1 to 2 s."""
    _use_tracking(tracking)
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(f"{model_uri}/artifacts/data_config.yaml", dst_path=folder)
        except (MlflowException, OSError) as err:
            raise DataError(f"cannot load model {model_uri}: {getattr(err, 'message', err)}") from None
        return DataConfig.model_validate(yaml.safe_load(Path(path).read_text()))


def score_rows(pipeline, data_config: DataConfig, rows: pd.DataFrame) -> pd.DataFrame:
    """`score` and `is_anomaly` of rows that passed validation: the model's `predict` after its
    validation, and batch scoring, which validates each batch once and then calls this with the
    loaded model's pipeline."""
    scores = pipeline.decision_function(features(rows, data_config))
    return pd.DataFrame({"score": scores, "is_anomaly": (scores > pipeline[-1].threshold_).astype("int64")})


def score_frame(model, frame: pd.DataFrame, source: str, edges: pd.DataFrame | None = None) -> tuple[ValidationResult, pd.DataFrame]:
    """Validate `frame` with the model's training schema; the valid rows come back with `score` and `is_anomaly`.

    For a graph model `frame` is the node table: its rows carry a `neighbors` column, or `edges` gives the edge list.
    """
    python_model = model.unwrap_python_model()
    data_config = python_model.data_config
    if data_config.graph is not None and edges is None and NEIGHBORS not in frame:
        raise DataError(f"{source}: a graph model scores nodes with their edges: give the edge list (--edges) or a '{NEIGHBORS}' column of neighbour ids")
    result = validate(frame, data_config, with_label=False, source=source)
    valid = result.valid
    if len(valid) == 0:
        return result, valid.assign(score=pd.Series(dtype="float64"), is_anomaly=pd.Series(dtype="int64"))
    if edges is not None:
        graph = data_config.graph
        valid, _ = with_neighbors(valid, frame, edges, id_column=data_config.id_column, neighbors=NEIGHBORS, source=graph.source, target=graph.target)
    predictions = score_rows(python_model.pipeline, data_config, valid)
    scored = valid.drop(columns=NEIGHBORS) if edges is not None else valid  # the user's columns, not the derived lists
    return result, scored.assign(score=predictions["score"].to_numpy(), is_anomaly=predictions["is_anomaly"].to_numpy())


def score_file(model_uri: str, input_path: str | Path, output_path: str | Path, batch_rows: int = BATCH_ROWS,
               edges_path: str | Path | None = None, options: ReadOptions | None = None) -> dict:
    """Write the valid input rows plus `score` and `is_anomaly` to `output_path`; bad rows go beside it.

    The input (format by suffix or `options`) streams through `batch_rows` at a time where its format allows, each batch
    validated, scored and appended, so memory stays flat however large the file. A graph (node
    table, with `edges_path` or a `neighbors` column) is scored whole.
    """
    use_store(store_uri())
    model_uri = pinned_uri(model_uri)  # the record names the version, not an alias that moves on
    model = load_model(model_uri)
    record = provenance.describe(model_uri, model.unwrap_python_model())
    graph = model.unwrap_python_model().data_config.graph is not None
    if edges_path is not None and not graph:
        raise DataError(f"{model_uri} is not a graph model: it takes no edge list")
    edges = read_table(edges_path) if edges_path is not None else None
    counts = {"n_rows": 0, "n_valid": 0, "n_rejected": 0, "n_anomalies": 0}
    rejected_file = rejected_path(output_path)
    with TableWriter(output_path, provenance.metadata(record)) as scored_out, TableWriter(rejected_file) as rejected_out:
        for batch in [read_table(input_path, options=options)] if graph else iter_table(input_path, batch_rows, options):
            result, scored = score_frame(model, batch, str(input_path), edges)
            if len(result.rejected):  # row numbers count from the start of the file, not the batch
                rejected_out.write(result.rejected.assign(**{ROW_COLUMN: result.rejected[ROW_COLUMN] + counts["n_rows"]}))
            counts["n_rows"] += result.n_rows
            counts["n_rejected"] += len(result.rejected)
            if len(scored):
                scored_out.write(scored)
                counts["n_valid"] += len(scored)
                counts["n_anomalies"] += int(scored["is_anomaly"].sum())
    if counts["n_rejected"] == 0:
        remove_stale(rejected_file)
    if counts["n_valid"] == 0:
        remove_stale(output_path)
        raise DataError(f"{input_path}: no valid rows to score; see {rejected_file}")
    keep_record(output_path, record)
    report = {**counts, "rejected_share": round(counts["n_rejected"] / counts["n_rows"], 6), "output": str(output_path), "model": record}
    if counts["n_rejected"]:
        report["rejected_file"] = str(rejected_file)
    return report


def keep_record(output_path: str | Path, record: dict) -> None:
    """The side file of an output whose format has no metadata of its own (CSV, a folder); a stale one goes."""
    if provenance.is_parquet_file(output_path):
        provenance.side_file(output_path).unlink(missing_ok=True)
    else:
        provenance.write_side_file(output_path, record)


def append_to_store(scored: pd.DataFrame, url: str, table: str) -> None:
    """Append scored rows to a SQL table (created on first use) through SQLAlchemy."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            scored.to_sql(table, connection, if_exists="append", index=False)
    finally:
        engine.dispose()
