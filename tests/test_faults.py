"""PostgreSQL going away during a training run: a clear failure, no half-registered model, no
alias moved; once it is back, a rerun completes and the Optuna study resumes."""

import socket
import threading
import time

import mlflow
import psycopg
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.training import training_flow
from pynomaly_core.errors import DataError
from pynomaly_core.tracking.champion import champion_version_uri
from tasks.training import unreachable_server
from tests.conftest import demo_config, prefect_harness
from tests.services import TcpProxy, free_port

MODEL = "breast-cancer-detector"


@pytest.fixture
def optuna_db(scratch_database):
    return scratch_database


def finished_trials(database: str) -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as connection:
        return connection.execute("SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]


def stop_after_trials(proxy: TcpProxy, database: str, n: int) -> threading.Thread:
    def watch():
        for _ in range(1200):
            try:
                if finished_trials(database) >= n:
                    proxy.stop()
                    return
            except psycopg.errors.UndefinedTable:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_database_outage_mid_study_then_rerun_resumes(workdir, optuna_db, monkeypatch):
    monkeypatch.delenv("PYNOMALY_OPTUNA_STORAGE", raising=False)
    port = free_port()
    proxy = TcpProxy(port).start()
    storage = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{optuna_db}"
    first = demo_config(detectors=["iforest", "hbos"], n_trials=2, storage=storage)
    # A search that takes long enough to be cut off after its 2nd trial.
    second = demo_config(detectors=["knn", "lof", "copod"], n_trials=8, storage=storage, pruning=False)
    try:
        with prefect_harness():
            assert training_flow(first, return_state=True).is_completed()
            client = MlflowClient()
            assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]

            watcher = stop_after_trials(proxy, optuna_db, 2 + 2)
            failed = training_flow(second, return_state=True)
            watcher.join()
            assert failed.is_failed()
            with pytest.raises(ConnectionError, match=rf"Optuna storage postgresql\+psycopg://postgres@127.0.0.1:{port}/{optuna_db} unreachable"):
                failed.result()
            # Nothing was registered and the aliases stayed where they were.
            assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == ["1"]
            assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
            assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "1"
            done_before = finished_trials(optuna_db) - 2
            assert 2 <= done_before < 8

            proxy = TcpProxy(port).start()  # the database is back
            rerun = training_flow(second, return_state=True)
            assert rerun.is_completed(), rerun.message
            summary = rerun.result()
    finally:
        proxy.stop()
        mlflow.set_tracking_uri(None)
    assert finished_trials(optuna_db) - 2 == 8  # the study resumed: 8 finished trials in all, not 8 more
    logged = client.search_runs(
        [client.get_run(summary.training.run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{summary.training.run_id}'"
    )
    assert len(logged) == 8 - done_before  # the rerun ran only the missing trials
    assert summary.registration.version == "2"


def test_an_unreachable_mlflow_server_is_retried_not_reported_as_a_missing_champion(workdir, monkeypatch):
    config = demo_config()
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed.getsockname()[1]}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries spent at once
    mlflow.set_tracking_uri(None)
    with pytest.raises(MlflowException) as raised:
        champion_version_uri(config.registry.model_name)
    assert unreachable_server(raised.value)  # so the scoring task retries it
    # A store that answers but holds no champion is the user's to fix: a clear error, no retry.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    mlflow.set_tracking_uri(None)
    with pytest.raises(DataError, match="no models:/breast-cancer-detector@champion: train and register a model first") as missing:
        champion_version_uri(config.registry.model_name)
    assert not unreachable_server(missing.value)
    mlflow.set_tracking_uri(None)
