"""`pynomaly score --engine spark`: a Parquet dataset scored on a Spark session through MLflow's `spark_udf`.

Spark reads the input; each Arrow batch is validated by the same `validate` as `pynomaly score`
(`mapInPandas`), with the schema the model was trained on; the valid rows are scored by the
model as a pandas UDF, and both outputs are written by Spark: the scored rows as Parquet at
OUT, the rejected rows with `_row` and `_errors` as CSV at OUT.rejected.csv. The validated rows
are cached (spilled to disk past Spark's memory), so the input is read and validated once for
both outputs and the counts. Extra `spark`.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

import mlflow
import numpy as np
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from . import provenance
from ..errors import DataError
from ..tracking.champion import pinned_uri
from ..tracking.store import store_uri, use_store
from .files import load_model, rejected_path, remove_stale
from ..data.validation import ERRORS_COLUMN, ROW_COLUMN, validate

SPARK_TYPES = {"float": "double", "int": "bigint", "str": "string", "bool": "boolean"}
FILE, INDEX = "_pynomaly_file", "_pynomaly_index"  # where each row came from: file and 0-based row in it


def session(master: str) -> SparkSession:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers: this environment, not the first python3 on PATH
    # Arrow batches as large as `pynomaly score`'s: the detector's cost per call is paid per batch.
    builder = (SparkSession.builder.master(master).appName("pynomaly-score").config("spark.ui.enabled", "false")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100000"))
    # Spark runs one task per core, each in its own Python worker: one native (BLAS, OpenMP) thread each, not one per core.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        builder = builder.config(f"spark.executorEnv.{variable}", "1")
    spark = builder.getOrCreate()
    # At least four input splits per core (Spark's default packs a folder of small files into about one per core):
    # the cores finish together instead of one scoring the last large split alone.
    spark.conf.set("spark.sql.files.minPartitionNum", str(4 * spark.sparkContext.defaultParallelism))
    return spark


def file_offsets(frame) -> dict[str, int]:
    """Rows before each file, the files in path order (as `pynomaly score` reads a folder), so `_row` counts through the dataset."""
    counts = sorted(frame.groupBy(FILE).count().collect())
    starts = [0]
    for _, count in counts[:-1]:
        starts.append(starts[-1] + count)
    return {path: start for (path, _), start in zip(counts, starts)}


def score_with_spark(model_uri: str, input_path: str | Path, output_path: str | Path, master: str = "local[*]") -> dict:
    """Score the Parquet file, folder or glob `input_path`; returns the same counts as `score_file`."""
    use_store(store_uri())
    model_uri = pinned_uri(model_uri)  # the version spark_udf ships is the one whose schema validates
    model = load_model(model_uri)  # the training schema; spark_udf ships the model to the workers itself
    data_config = model.unwrap_python_model().data_config
    if data_config.graph is not None:
        raise DataError(f"{model_uri} scores a whole graph: use the default engine")
    spark = session(master)
    try:
        frame = spark.read.parquet(str(input_path))
    except AnalysisException as err:
        raise DataError(f"cannot read {input_path} as Parquet with Spark: {err.getMessage()}") from None
    missing = [c for c in data_config.columns if c not in frame.columns]
    if missing:
        raise DataError(f"{input_path}: missing required column(s) {', '.join(missing)}; found columns: {', '.join(frame.columns)}")
    located = frame.select("*", F.col("_metadata.file_path").alias(FILE), F.col("_metadata.row_index").alias(INDEX))
    checked = located.mapInPandas(
        functools.partial(_check, data_config=data_config, columns=frame.columns, source=str(input_path)),
        schema=StructType([*located.schema.fields, StructField(ERRORS_COLUMN, StringType())]),
    ).persist()
    valid = checked.filter(F.col(ERRORS_COLUMN).isNull()).select(
        *[F.col(c).cast(SPARK_TYPES[data_config.columns[c].type]).alias(c) if c in data_config.columns else F.col(c) for c in frame.columns]
    )
    predict = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="score double, is_anomaly long", env_manager="local")
    scored = valid.withColumn("_prediction", predict(F.struct(*data_config.columns)))
    scored = scored.select(*frame.columns, "_prediction.score", "_prediction.is_anomaly")
    rejected_out = str(rejected_path(output_path))
    try:
        scored.write.mode("overwrite").parquet(str(output_path))  # fills the cache
        n_rows = checked.count()
        n_valid, n_anomalies = spark.read.parquet(str(output_path)).agg(F.count("*"), F.sum("is_anomaly")).first()
        n_rejected = n_rows - n_valid
        if n_rejected:  # as `pynomaly score`: no rejected file when nothing was rejected
            start = F.create_map(*[F.lit(x) for item in file_offsets(checked).items() for x in item])
            checked.filter(F.col(ERRORS_COLUMN).isNotNull()) \
                .select((start[F.col(FILE)] + F.col(INDEX) + 1).alias(ROW_COLUMN), *frame.columns, ERRORS_COLUMN) \
                .write.mode("overwrite").option("header", True).csv(rejected_out)
        else:
            remove_stale(rejected_out)
    except Exception as err:  # a DataError raised in a Python worker arrives wrapped in Spark's exception
        found = re.search(r"DataError: (.*)", str(err))
        if found is None:
            raise
        raise DataError(found.group(1)) from None
    finally:
        checked.unpersist()
    report = {"n_rows": n_rows, "n_valid": n_valid, "n_rejected": n_rejected, "n_anomalies": int(n_anomalies or 0),
              "rejected_share": round(n_rejected / n_rows, 6) if n_rows else 0.0, "output": str(output_path),
              "model": provenance.describe(model_uri, model.unwrap_python_model())}
    if n_rejected:
        report["rejected_file"] = rejected_out
    return report


def _check(batches, data_config, columns: list[str], source: str):
    """mapInPandas: each Arrow batch validated with the training schema; every row comes back as
    given (with the file and row it came from), with its `_errors` when rejected."""
    for batch in batches:
        result = validate(batch[columns], data_config, with_label=False, source=source)
        errors = np.full(len(batch), None, dtype=object)
        errors[result.rejected[ROW_COLUMN].to_numpy(dtype="int64") - 1] = result.rejected[ERRORS_COLUMN].to_numpy()
        yield batch.assign(**{ERRORS_COLUMN: errors})
