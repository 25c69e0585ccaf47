"""The one champion lookup: `models:/NAME@ALIAS` pinned to the version the alias names now.

Scoring, monitoring, the stream consumer, alerts, the CLI and the workbench all ask here, against
the MLflow store already in use (`store.use_store(store.store_uri(...))`).
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ..errors import DataError
from .store import CHAMPION

# What MLflow answers when the model, or its alias, does not exist.
MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def champion_uri(model_name: str) -> str:
    return f"models:/{model_name}@{CHAMPION}"


def champion_version_uri(model_name: str) -> str:
    """The champion pinned to its version now, so a champion promoted mid-batch does not mix two models."""
    try:
        version = MlflowClient().get_model_version_by_alias(model_name, CHAMPION).version
    except MlflowException as err:
        if err.error_code not in MISSING:  # e.g. a server that stays unreachable: not the user's mistake
            raise
        raise DataError(f"no {champion_uri(model_name)}: train and register a model first (pynomaly run)") from None
    return f"models:/{model_name}/{version}"


def pinned_uri(model_uri: str) -> str:
    """`models:/NAME@ALIAS` as `models:/NAME/VERSION`, so that workers loading it later all get one version;
    any other URI as given."""
    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return model_uri
    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias).version
    except MlflowException as err:
        raise DataError(f"cannot load model {model_uri}: {err.message}") from None
    return f"models:/{name}/{version}"
