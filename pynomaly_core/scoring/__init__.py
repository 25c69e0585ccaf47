"""Scoring: the registered pyfunc model (`model`, logged as models-from-code), files and frames
scored with it (`files`), the Spark and Dask engines, request batching for the server
(`batching`) and the server itself (`serving`).
`score_with_engine` picks the engine; the engines import `files`, never this module."""

from __future__ import annotations

from pathlib import Path

from ..config import EngineOptions, ReadOptions
from ..data.io import BATCH_ROWS
from ..errors import DataError
from .files import keep_record, score_file


def score_with_engine(engine: EngineOptions, model_uri: str, input_path: str | Path, output_path: str | Path, *,
                      batch_rows: int = BATCH_ROWS, edges_path: str | Path | None = None, options: ReadOptions | None = None) -> dict:
    """`score_file` in this process (engine `pandas`), or the Parquet input scored on Spark or Dask; the same counts back."""
    if engine.name == "pandas":
        return score_file(model_uri, input_path, output_path, batch_rows, edges_path, options)
    if edges_path is not None or (options is not None and options.format not in (None, "parquet")):
        raise DataError(f"engine {engine.name} reads Parquet (a file, folder or glob) and scores no graph; use the default engine")
    try:
        if engine.name == "spark":
            from .spark import score_with_spark

            report = score_with_spark(model_uri, input_path, output_path, engine.spark_master)
        else:
            from .dask import score_with_dask

            report = score_with_dask(model_uri, input_path, output_path, engine.scheduler, engine.workers, batch_rows)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] not in ("pyspark", "py4j", "dask", "distributed"):
            raise
        raise DataError(f"engine {engine.name} needs {err.name}: pip install 'pynomaly[{engine.name}]'") from None
    keep_record(output_path, report["model"])  # the engines write a folder of parts: the record goes beside it
    return report
