import contextlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import psycopg
import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from pynomaly_core import stages
from pynomaly_core.config import PipelineConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
# Five small ADBench datasets, vendored so that tests read nothing outside the repository.
ADBENCH = ROOT / "tests" / "data" / "adbench"
MODEL_URI = "models:/breast-cancer-detector@champion"


def pytest_terminal_summary(terminalreporter):
    """CI's log states how many tests were skipped and deselected, zero included (reasons: `-ra`)."""
    stats = terminalreporter.stats
    terminalreporter.write_line(f"skipped: {len(stats.get('skipped', []))}, deselected: {len(stats.get('deselected', []))}")


def demo_config(**train) -> PipelineConfig:
    """The demo config with a short Optuna search and no progress bar, for tests."""
    config = load_config(ROOT / "configs" / "demo.yaml")
    defaults = {"strategy": "consensus", "n_trials": 6, "progress_bar": False}
    return config.model_copy(update={"train": config.train.model_copy(update={**defaults, **train})})


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty project folder holding the demo data, as the current directory, with its own MLflow store."""
    shutil.copytree(ROOT / "data" / "raw", tmp_path / "data" / "raw")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def registered(workdir):
    """The demo trained with a short IForest search and registered as MODEL_URI, in `workdir`'s MLflow store."""
    config = demo_config(detectors=["iforest"], n_trials=2)
    for stage in ("validate", "preprocess", "train", "evaluate", "register"):
        stages.STAGES[stage](config)
    yield config
    mlflow.set_tracking_uri(None)


@pytest.fixture
def demo_frame() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")


def write_config(config: PipelineConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The local PostgreSQL server (started here when it is down), database `test`."""
    def reachable() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", 5432)) == 0

    if not reachable():
        version = os.listdir("/etc/postgresql")[0]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True)
    return "postgresql+psycopg://postgres@127.0.0.1:5432/test"


_prefect_api = contextlib.ExitStack()


@contextlib.contextmanager
def prefect_harness():
    """A temporary Prefect API for flow runs, one for the whole session.

    Prefect's event worker is a process-wide singleton bound to the first API it reached, so a
    second temporary server would lose events. A fresh venv's first start compiles and migrates,
    so the start-up allowance is long.
    """
    if not _prefect_api._exit_callbacks:
        _prefect_api.enter_context(prefect_test_harness(server_startup_timeout=180))
    yield


@pytest.fixture(scope="session", autouse=True)
def _stop_prefect_api():
    yield
    _prefect_api.close()


@pytest.fixture
def scratch_database(postgres_url, request) -> str:
    """The name of an empty PostgreSQL database of this test's own, dropped afterwards."""
    from tests.services import PG_ADMIN, drop_databases

    name = f"pynomaly_{request.node.module.__name__.split('.')[-1]}_{os.getpid()}"
    drop_databases(name)
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield name
    drop_databases(name)
