"""MLflow plumbing: where runs go, lineage tags, and the champion/challenger alias gate."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess  # nosec B404
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.exceptions import MlflowException

from ..config import TrackingConfig, TrainConfig

CHAMPION, CHALLENGER = "champion", "challenger"


def tracking_uri(tracking: TrackingConfig) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or tracking.uri


def store_uri(tracking: TrackingConfig | None = None) -> str:
    """The MLflow store's address: MLFLOW_TRACKING_URI or the config's, a SQLite path made absolute."""
    return absolute_sqlite(tracking_uri(tracking or TrackingConfig()))


def optuna_storage(train: TrainConfig) -> str:
    """The Optuna study database: PYNOMALY_OPTUNA_STORAGE (set by the local services) or the config's."""
    return absolute_sqlite(os.environ.get("PYNOMALY_OPTUNA_STORAGE") or train.storage)


def browse_command(uri: str) -> str:
    if not uri.startswith("sqlite:///"):
        return f"open {uri}"
    path = Path(uri.removeprefix("sqlite:///"))
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())  # the short form, run from the project folder
    return f"mlflow ui --backend-store-uri sqlite:///{path}"


def absolute_sqlite(uri: str) -> str:
    """Anchor a relative SQLite URL to the current directory now, not at each later connection."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return uri
    path = Path(uri.removeprefix("sqlite:///")).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def use_store(uri: str) -> None:
    """`mlflow.set_tracking_uri(uri)` without its export of MLFLOW_TRACKING_URI.

    MLflow exports the URI for subprocesses, and `tracking_uri` reads that variable as the
    user's override: a later project folder in the same process (a benchmark's next temporary
    folder, a second config) would then log into the first folder's store, through MLflow's
    cached engine to a database that may be deleted by then ("attempt to write a readonly
    database"). So the variable is left as the user set it.
    """
    user_value = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if user_value is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_value


def setup(tracking: TrackingConfig) -> str:
    """Point MLflow at MLFLOW_TRACKING_URI, or the embedded default, and select the experiment."""
    uri = store_uri(tracking)
    use_store(uri)
    if mlflow.get_experiment_by_name(tracking.experiment) is None:
        # A local store keeps artifacts beside its database; a server decides for itself.
        local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
        location = Path(tracking.artifact_root).resolve().as_uri() if local else None
        mlflow.create_experiment(tracking.experiment, artifact_location=location)
    mlflow.set_experiment(tracking.experiment)
    return uri


def table_source(source: str | Path, query: str | None = None):
    """The MLflow dataset source of a table `io.read_table` read: a local file, built as such.

    MLflow registers its local source twice, so resolving a path string warns that it is
    ambiguous. A SQL query has no MLflow source type (and its URL may hold a password): None,
    and MLflow records the code location; the logged config names the query.
    """
    if query is not None:
        return None
    return get_dataset_source_from_json(json.dumps({"uri": str(Path(source).resolve())}), "local")


def pandas_digest(frame) -> str:
    """MLflow's digest of a pandas dataset (`mlflow.data.digest_utils.compute_pandas_digest`), the same string, without
    its type test of every cell of the frame (to find the columns that hold only strings): on donors x 8's training
    rows that was a Python call for each of 43 M cells, about a minute and 0.5 GiB. Only an object or string column
    can hold only strings, so only those are tested."""
    import numpy as np
    import pandas as pd
    from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest

    text = [name for name in frame.columns if (frame[name].dtype == object or isinstance(frame[name].dtype, pd.StringDtype))
            and bool((frame[name].map(type) == str).all())]
    trimmed = frame.head(MAX_ROWS)
    columns = pd.Index(text, dtype=object).union(trimmed.select_dtypes(include=[np.number]).columns)
    return get_normalized_md5_digest([pd.util.hash_pandas_object(trimmed[columns]).values, np.int64(len(frame))]
                                     + [str(name).encode() for name in frame.columns])


def git_commit() -> str:
    try:
        # Bandit B603/B607: a fixed argv without a shell; git is found on PATH like any developer tool.
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()  # nosec B603 B607
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def file_md5(path: str | Path) -> str:
    """The MD5 that DVC records for a file (dvc.lock), so a run can be matched to its data version."""
    with open(path, "rb") as handle:  # DVC's content id, not a security hash
        return hashlib.file_digest(handle, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


@dataclass
class GateDecision:
    version: str
    promoted: bool
    metric: str
    value: float
    previous_champion: str | None
    previous_value: float | None

    @property
    def aliases(self) -> list[str]:
        return [CHAMPION, CHALLENGER] if self.promoted else [CHALLENGER]


def champion_gate(model_name: str, version: str, metric: str, value: float, min_improvement: float = 0.0) -> GateDecision:
    """Alias the new version `challenger`; move `champion` to it only if it beats the current champion."""
    client = MlflowClient()
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        champion = None
    previous = client.get_run(champion.run_id).data.metrics.get(metric) if champion else None
    promoted = champion is None or previous is None or value > previous + min_improvement
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    return GateDecision(version, promoted, metric, value, str(champion.version) if champion else None, previous)
