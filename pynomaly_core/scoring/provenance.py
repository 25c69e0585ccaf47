"""Which model scored a file: its version, its threshold and what its score means, kept with the scored rows.

A batch must be read with the model that scored it, whatever the champion is when it is read: its
scores, flags, explanations and labels all belong to that version. A single Parquet file carries
the record in its schema metadata (key `pynomaly.model`); every other output (CSV, the folders
Spark and Dask write) gets a side file `<stem>.model.json` beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

KEY = "pynomaly.model"


def describe(model_uri: str, python_model) -> dict:
    """The record of a scoring by `python_model` (an AnomalyModel) loaded from the pinned `model_uri`."""
    detector = python_model.pipeline[-1]
    name = getattr(detector, "name", None) or type(detector).__name__
    return {
        "model_uri": model_uri,
        "threshold": float(detector.threshold_),
        "score_meaning": f"{name} decision function: higher is more anomalous; is_anomaly = 1 where score > threshold. "
                         "Scales differ between versions: compare percentiles among the version's reference rows.",
    }


def metadata(record: dict) -> dict[str, str]:
    """The record as Parquet schema metadata."""
    return {KEY: json.dumps(record)}


def side_file(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}.model.json")


def is_parquet_file(output: str | Path) -> bool:
    return Path(output).suffix.lower() in (".parquet", ".pq") and not Path(output).is_dir()


def write_side_file(output: str | Path, record: dict) -> Path:
    path = side_file(output)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read(output: str | Path) -> dict | None:
    """The record kept with a scored output (file metadata first, then the side file); None for outputs written before."""
    output = Path(output)
    if is_parquet_file(output) and output.exists():
        found = (pq.read_schema(output).metadata or {}).get(KEY.encode())
        if found:
            return json.loads(found)
    path = side_file(output)
    return json.loads(path.read_text()) if path.exists() else None
