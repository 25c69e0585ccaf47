"""`pynomaly score --engine dask`: a Parquet dataset scored partition by partition on a Dask cluster.

`dask.dataframe.read_parquet(...).map_partitions(...)`: each partition is validated by the same
`validate` as `pynomaly score` and its valid rows are scored by the model, which a worker
plugin loads once on each worker (not once per partition). The scored rows are written as a
Parquet folder at OUT by the workers; the rejected rows, with `_row` and `_errors`, are
gathered and written to OUT.rejected.csv. Extra `dask`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import dask
import dask.dataframe as dd
import mlflow
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster, WorkerPlugin, get_worker

from . import provenance
from ..config import TrackingConfig
from ..data.io import BATCH_ROWS, TableWriter
from ..errors import DataError
from ..tracking.champion import pinned_uri
from ..tracking.store import store_uri, use_store
from .files import load_model, model_schema, rejected_path, remove_stale, score_rows
from ..data.validation import ERRORS_COLUMN, PANDAS_TYPES, ROW_COLUMN, validate

PLUGIN = "pynomaly-model"
PARTITION = "_pynomaly_partition"


class ModelOnWorker(WorkerPlugin):
    """A Dask worker plugin: the model, loaded once on each worker when the plugin is registered
    (or when a worker joins later), for every partition that worker scores."""

    name = PLUGIN

    def __init__(self, model_uri: str, tracking_uri: str):
        self.model_uri, self.tracking_uri = model_uri, tracking_uri
        self.model = None

    def setup(self, worker) -> None:
        self.model = load_model(self.model_uri, TrackingConfig(uri=self.tracking_uri)).unwrap_python_model()
        logging.getLogger("distributed.worker").info("pynomaly: loaded %s on this worker", self.model_uri)  # in the worker's log


def score_partition(rows: pd.DataFrame, source: str, batch_rows: int = BATCH_ROWS, partition_info=None) -> pd.DataFrame:
    """One partition: every row as given with `score` and `is_anomaly` when valid, `_errors` when
    rejected, and its position in the partition (`_row`, 1-based) and partition number. Validated and
    scored `batch_rows` at a time, as `pynomaly score` does, into arrays for the whole partition that
    are then added in one step: concatenating per-batch frames (with an all-None `_errors` column)
    took 15 to 20 % more CPU per partition, mostly in pandas checking each None."""
    if rows.empty:  # an empty part file: nothing to validate (validate refuses a table without rows)
        return _meta(rows)
    model = get_worker().plugins[PLUGIN].model
    rows = rows.reset_index(drop=True)
    score, is_anomaly = np.full(len(rows), np.nan), np.zeros(len(rows), dtype=np.int64)
    errors, scored = np.full(len(rows), None, dtype=object), np.ones(len(rows), dtype=bool)
    for start in range(0, len(rows), batch_rows):
        batch = rows.iloc[start:start + batch_rows]
        result = validate(batch, model.data_config, with_label=False, source=source)
        rejected = start + result.rejected[ROW_COLUMN].to_numpy(dtype=np.int64) - 1
        errors[rejected], scored[rejected] = result.rejected[ERRORS_COLUMN].to_numpy(), False
        if len(result.valid):
            valid = start + np.flatnonzero(scored[start:start + len(batch)])
            predictions = score_rows(model.pipeline, model.data_config, result.valid)
            score[valid], is_anomaly[valid] = predictions["score"].to_numpy(), predictions["is_anomaly"].to_numpy()
    return rows.assign(score=score, is_anomaly=pd.arrays.IntegerArray(is_anomaly, ~scored), **{
        ROW_COLUMN: np.arange(1, len(rows) + 1), ERRORS_COLUMN: errors,
        PARTITION: partition_info["number"] if partition_info else 0})


def local_cluster(workers: int) -> LocalCluster:
    """`workers` single-threaded worker processes, without the MALLOC_TRIM_THRESHOLD_ that Dask sets in their
    environment by default: a fixed threshold also fixes glibc's mmap threshold, so each of the detector's large
    temporary arrays is mapped and unmapped anew, which doubled the CPU time of scoring a partition (IForest on donors)."""
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items() if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):  # read when the nannies are made
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)


def score_with_dask(model_uri: str, input_path: str | Path, output_path: str | Path, scheduler: str | None = None, workers: int = 2,
                    batch_rows: int = BATCH_ROWS) -> dict:
    """Score the Parquet file, folder or glob `input_path` on the Dask scheduler at `scheduler`,
    or on a local cluster of `workers` single-threaded processes; returns the same counts as `score_file`."""
    use_store(store_uri())
    model_uri = pinned_uri(model_uri)  # every worker loads the same version
    data_config = model_schema(model_uri)  # the workers load the model
    if data_config.graph is not None:
        raise DataError(f"{model_uri} scores a whole graph: use the default engine")
    source = str(Path(input_path).resolve()) if Path(input_path).exists() else str(input_path)
    try:
        frame = dd.read_parquet(source)
        columns = list(frame.columns)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {input_path} as Parquet with Dask: {err}") from None
    missing = [c for c in data_config.columns if c not in columns]
    if missing:
        raise DataError(f"{input_path}: missing required column(s) {', '.join(missing)}; found columns: {', '.join(columns)}")

    with contextlib.ExitStack() as stack:
        cluster = None if scheduler else stack.enter_context(local_cluster(workers))
        client = stack.enter_context(Client(scheduler or cluster))
        client.register_plugin(ModelOnWorker(model_uri, mlflow.get_tracking_uri()), name=PLUGIN)
        try:
            checked = frame.map_partitions(score_partition, str(input_path), batch_rows, meta=_meta(frame._meta))
            valid = checked[checked[ERRORS_COLUMN].isna()]
            scored = valid[[*columns, "score", "is_anomaly"]].astype(
                {c: PANDAS_TYPES[spec.type] for c, spec in data_config.columns.items()} | {"is_anomaly": "int64"})
            write = scored.to_parquet(str(output_path), write_index=False, overwrite=Path(output_path).exists(), compute=False)
            # One pass over the input: the written rows, the rejected ones, the counts.
            rejected, lengths, n_anomalies, _ = dask.compute(
                checked[~checked[ERRORS_COLUMN].isna()], checked.map_partitions(len), scored["is_anomaly"].sum(), write)
        finally:
            client.unregister_worker_plugin(PLUGIN)
    # The record of which model scored the rows needs its threshold: the pipeline, loaded here once (1 to 2 s).
    record = provenance.describe(model_uri, load_model(model_uri).unwrap_python_model())
    return _report(rejected, list(lengths), columns, output_path, int(n_anomalies)) | {"model": record}


def _meta(empty: pd.DataFrame) -> pd.DataFrame:
    return empty.assign(score=pd.Series(dtype="float64"), is_anomaly=pd.Series(dtype="Int64"), **{
        ROW_COLUMN: pd.Series(dtype="int64"), ERRORS_COLUMN: pd.Series(dtype=object), PARTITION: pd.Series(dtype="int64")})


def _report(rejected: pd.DataFrame, lengths: list[int], columns: list[str], output_path, n_anomalies: int) -> dict:
    """Counts, and the rejected rows written with `_row` counted through the dataset (partitions in order)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n_rows, n_rejected = int(sum(lengths)), len(rejected)
    report = {"n_rows": n_rows, "n_valid": n_rows - n_rejected, "n_rejected": n_rejected, "n_anomalies": n_anomalies,
              "rejected_share": round(n_rejected / n_rows, 6) if n_rows else 0.0, "output": str(output_path)}
    if n_rejected:
        rows = rejected[ROW_COLUMN].to_numpy() + offsets[rejected[PARTITION].to_numpy()]
        rejected = rejected.assign(**{ROW_COLUMN: rows}).sort_values(ROW_COLUMN)
        with TableWriter(rejected_path(output_path)) as out:
            out.write(rejected[[ROW_COLUMN, *columns, ERRORS_COLUMN]])
        report["rejected_file"] = str(rejected_path(output_path))
    else:
        remove_stale(rejected_path(output_path))
    return report
