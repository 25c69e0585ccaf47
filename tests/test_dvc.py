"""`dvc repro` and `dvc exp run` in a fresh clone run the same stages, and push/pull work."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _run(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PATH=f"{BIN}:{env['PATH']}", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def clone(tmp_path):
    """A fresh git repository with the project's pipeline files, as a user's clone has them."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    wanted = [f for f in files if f.startswith(("configs/", "data/raw/", ".dvc/")) or f in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")]
    for name in wanted:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name, follow_symlinks=False)
    _run("git", "init", "-q", cwd=tmp_path)
    _run("git", "add", "-A", cwd=tmp_path)
    _run("git", "commit", "-qm", "clone", cwd=tmp_path)
    return tmp_path


def test_dvc_exp_run_repro_metrics_push_and_pull(clone):
    # The Optuna search (consensus strategy) with 3 trials, each an MLflow child run.
    _run("dvc", "exp", "run", "-S", "train.strategy=consensus", "-S", "train.n_trials=3", "-S", "train.progress_bar=false", cwd=clone)
    assert "n_trials: 3" in (clone / "configs" / "demo.yaml").read_text()  # -S edited the one config file
    training = json.loads((clone / "models" / "training.json").read_text())
    assert training["n_trials"] == 3 and training["criterion"] == "consensus_spearman"
    client = MlflowClient(f"sqlite:///{clone}/mlflow/mlflow.db")
    trials = client.search_runs(client.get_run(training["run_id"]).info.experiment_id, f"tags.mlflow.parentRunId = '{training['run_id']}'")
    assert len(trials) == 3 and all("detector" in t.data.params for t in trials)
    metrics = json.loads(_run("dvc", "metrics", "show", "--json", cwd=clone))
    (workspace,) = metrics.values()
    assert 0.5 < workspace["data"]["reports/metrics.json"]["data"]["roc_auc"] <= 1
    assert (clone / "reports" / "registration.json").exists()

    assert "up to date" in _run("dvc", "repro", cwd=clone)

    _run("dvc", "push", cwd=clone)
    assert any((clone / ".dvc-remote").rglob("*"))
    shutil.rmtree(clone / "data" / "processed")
    shutil.rmtree(clone / ".dvc" / "cache")
    _run("dvc", "pull", cwd=clone)
    assert (clone / "data" / "processed" / "train.parquet").exists()
    assert "up to date" in _run("dvc", "repro", cwd=clone)
