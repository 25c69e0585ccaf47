"""The training stages as Prefect tasks. No anomaly-detection logic lives here."""

from __future__ import annotations

import sqlite3

import requests
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from pynomaly_core import stages

# Worth retrying: a database or server that was briefly unreachable or locked. Bad data is not.
TRANSIENT_ERRORS = (ConnectionError, TimeoutError, sqlite3.OperationalError, sqlalchemy.exc.OperationalError)


def unreachable_server(error: BaseException) -> bool:
    """MLflow's client, once its own retries are spent, wraps a lost connection in an MlflowException."""
    return isinstance(error, MlflowException) and isinstance(error.__context__, (requests.ConnectionError, requests.Timeout))


def is_transient(task, task_run, state) -> bool:
    return isinstance(state.data, TRANSIENT_ERRORS) or unreachable_server(state.data)


def stage_task(stage):
    """A pipeline stage as a Prefect task that retries transient errors only."""
    # DVC owns stage caching (it hashes files); Prefect caching by inputs would miss changed data.
    return task(
        stage,
        name=stage.__name__,
        retries=2,
        retry_delay_seconds=[2, 10],
        retry_condition_fn=is_transient,
        cache_policy=NO_CACHE,
    )


validate = stage_task(stages.validate)
preprocess = stage_task(stages.preprocess)
create_study = stage_task(stages.create_study)
tune = stage_task(stages.tune)
train = stage_task(stages.train)
evaluate = stage_task(stages.evaluate)
explain = stage_task(stages.explain)
register = stage_task(stages.register)
