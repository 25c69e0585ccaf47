"""Scale-out: the Optuna study on PostgreSQL, trials from parallel Dask worker processes joining it."""

import os

import mlflow
import optuna
import pytest

from flows.training import training_flow
from tests.conftest import demo_config, prefect_harness


@pytest.fixture
def optuna_db(scratch_database):
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{scratch_database}"


def test_parallel_trials_on_dask_fill_one_postgres_study(workdir, optuna_db, monkeypatch):
    monkeypatch.delenv("PYNOMALY_OPTUNA_STORAGE", raising=False)
    # ABOD's trials take seconds: the worker process that starts last still finds trials to run
    # (with millisecond trials the first one up could fill the study alone).
    config = demo_config(detectors=["abod", "knn"], n_trials=8, workers=2, storage=optuna_db)
    with prefect_harness():
        state = training_flow(config, return_state=True)
    mlflow.set_tracking_uri(None)
    assert state.is_completed(), state.message
    summary = state.result()
    (study,) = optuna.get_all_study_summaries(optuna_db)
    assert study.study_name == summary.training.study_name
    trials = optuna.load_study(study_name=study.study_name, storage=optuna_db).trials
    # Both Dask workers, separate processes (not this one), ran trials of the same study.
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids
    assert len(trials) >= 8 and summary.training.n_trials == len(trials)  # `train` found the study full
    selected = summary.training.params.get("members", [summary.training.detector])  # a detector, or the ensemble of the best trials
    assert set(selected) <= set(config.train.detectors)
    assert summary.registration.aliases == ["champion", "challenger"]
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlflow/mlflow.db")
    run = client.get_run(summary.training.run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    finished = [t for t in trials if t.state.is_finished()]
    assert sorted(int(c.info.run_name.split("-")[1]) for c in children) == sorted(t.number for t in finished)


def test_interrupted_study_resumes_on_postgres(workdir, optuna_db, monkeypatch):
    """Trials already in the PostgreSQL study count: a rerun adds only the missing ones."""
    import joblib
    import pandas as pd

    from pynomaly_core import stages

    monkeypatch.delenv("PYNOMALY_OPTUNA_STORAGE", raising=False)
    config = demo_config(detectors=["iforest", "hbos"], n_trials=4, storage=optuna_db)
    stages.validate(config)
    stages.preprocess(config)
    search = stages._search(config, joblib.load(config.paths.preprocessor), pd.read_parquet(config.paths.train))
    # An earlier run that stopped after 3 of its 4 trials.
    interrupted = config.model_copy(update={"train": config.train.model_copy(update={"n_trials": 3})})
    stages._selector(interrupted, search).choose(search.X, search.y)
    result = stages.train(config)
    client = mlflow.MlflowClient()
    logged = client.search_runs(client.get_run(result.run_id).info.experiment_id, f"tags.mlflow.parentRunId = '{result.run_id}'")
    mlflow.set_tracking_uri(None)
    assert result.study_name == search.study_name and result.n_trials == 4
    assert len(logged) == 1  # only the missing trial ran
