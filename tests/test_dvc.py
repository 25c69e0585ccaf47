"""`dvc repro` and `dvc exp run` in a fresh clone run the same stages, and push/pull work."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from mlflow import MlflowClient
from pydantic import BaseModel

from pynomaly_core import config as config_module, stages
from pynomaly_core.config import load_config
from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _run(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PATH=f"{BIN}:{env['PATH']}", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _clone(folder: Path) -> Path:
    """A fresh git repository in `folder` with the project's pipeline files, as a user's clone has them."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    wanted = [f for f in files if f.startswith(("configs/", "data/raw/", ".dvc/")) or f in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")]
    for name in wanted:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, folder / name, follow_symlinks=False)
    _run("git", "init", "-q", cwd=folder)
    _run("git", "add", "-A", cwd=folder)
    _run("git", "commit", "-qm", "clone", cwd=folder)
    return folder


@pytest.fixture
def clone(tmp_path):
    return _clone(tmp_path)


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


# Every stage declares what it reads


_opened: list[set] = []  # while a stage runs: the set the audit hook adds the paths it opens for reading to


def _record_open(event: str, args: tuple) -> None:
    if event != "open" or not _opened or not isinstance(args[0], (str, os.PathLike)):
        return
    path, mode, flags = args  # mode is None for os.open
    reading = (flags & (os.O_WRONLY | os.O_RDWR) == 0) if mode is None else ("r" in mode and "+" not in mode)
    # Files only: shutil.rmtree opens directories by names relative to a directory descriptor.
    if reading and os.path.isfile(path):
        _opened[-1].add(Path(path).resolve())


sys.addaudithook(_record_open)  # for the whole session: it records only while a stage runs


def _record_fields(fields: set, patch: pytest.MonkeyPatch) -> None:
    """Add to `fields` each config key read ("train.n_trials"; a whole section when it is dumped or copied)."""
    sections = [(config_module.PipelineConfig, "")] + [
        (field.annotation, f"{name}.") for name, field in config_module.PipelineConfig.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    ]
    nested = {prefix.rstrip(".") for _, prefix in sections}  # their own keys are recorded, not the section
    for cls, prefix in sections:
        def read(self, name, prefix=prefix):
            if name in type(self).model_fields and (prefix or name not in nested):
                fields.add(prefix + name)
            elif name in ("model_dump", "model_dump_json", "model_copy", "digest"):
                fields.add(prefix.rstrip(".") or "*")
            return object.__getattribute__(self, name)

        patch.setattr(cls, "__getattribute__", read)


def _declared(root: Path) -> dict[str, dict]:
    """Each stage's file deps, params keys and outs, as DVC resolves dvc.yaml."""
    with Repo(str(root)) as repo:
        return {
            stage.name: {
                "deps": {d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)},
                "params": {key for d in stage.deps if isinstance(d, ParamsDependency) for key in d.params},
                "outs": {o.def_path for o in stage.outs},
            }
            for stage in repo.index.stages
        }


def _status(root: Path) -> dict:
    return json.loads(_run("dvc", "status", "--json", cwd=root))


# No stage's input: where runs are logged, the paths (deps and outs themselves), and the whole
# config ("*"), which `train` logs with its run.
NOT_INPUTS = {"tracking", "paths", "*"}


@pytest.fixture(scope="module")
def pipeline_reads(tmp_path_factory):
    """A clone whose pipeline ran once, stage by stage in this process (what `pynomaly stage` runs),
    with the project files and config keys each stage read; then `dvc commit` recorded the run."""
    root = _clone(tmp_path_factory.mktemp("reads"))
    demo = root / "configs" / "demo.yaml"
    fast = yaml.safe_load(demo.read_text())
    fast["train"].update(strategy="consensus", detectors=["knn"], n_trials=2, cv_folds=2, progress_bar=False)
    fast["explain"].update(top_k=2, background=10)
    demo.write_text(yaml.safe_dump(fast, sort_keys=False))
    _run("git", "commit", "-qam", "a fast search", cwd=root)
    files, fields = {}, {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = load_config("params.yaml")
        for name, stage in stages.STAGES.items():
            opened, fields[name] = set(), set()
            with pytest.MonkeyPatch.context() as fields_patch:
                _record_fields(fields[name], fields_patch)
                _opened.append(opened)
                try:
                    stage(config)
                finally:
                    _opened.pop()
            files[name] = {
                str(path.relative_to(root)) for path in opened
                if path.is_relative_to(root) and path.relative_to(root).parts[0] not in ("mlflow", ".dvc", ".git")
            }
        mlflow.set_tracking_uri(None)
    _run("dvc", "commit", "--force", cwd=root)
    assert _status(root) == {}
    return root, files, fields


def _own_output(path: str, outs: set[str]) -> bool:
    return any(path == out or path.startswith(out + "/") for out in outs)


def _covered(key: str, declared: set[str]) -> bool:
    return key.split(".")[0] in NOT_INPUTS or any(key == d or key.startswith(d + ".") for d in declared)


def test_each_stage_declares_the_files_and_config_keys_it_reads(pipeline_reads):
    root, files, fields = pipeline_reads
    declared = _declared(root)
    # The recording works: register reads the test split and the reference's size.
    assert "data/processed/test.parquet" in files["register"] and "monitoring.reference_rows" in fields["register"]
    undeclared = {
        name: sorted(p for p in files[name] if p not in declared[name]["deps"] and not _own_output(p, declared[name]["outs"]))
        for name in stages.STAGES
    }
    assert not any(undeclared.values()), f"files read but not in dvc.yaml deps: {undeclared}"
    undeclared = {name: sorted(k for k in fields[name] if not _covered(k, declared[name]["params"])) for name in stages.STAGES}
    assert not any(undeclared.values()), f"config keys read but not in dvc.yaml params: {undeclared}"


def _change_key(params: dict, key: str) -> None:
    """Change the value at a dotted `key`, adding it when missing; a section gains a key, so that
    `${section.*}` still resolve."""
    *sections, last = key.split(".")
    for section in sections:
        params = params.setdefault(section, {})
    if isinstance(params.get(last), dict):
        params[last]["changed"] = True
    else:
        params[last] = "changed"


def _changed_deps(status: dict, stage: str) -> set[str]:
    """The deps `dvc status --json` says changed for `stage`: paths, and params as "params.yaml:KEY"."""
    changed = set()
    for entry in status.get(stage, []):
        for path, change in (entry.get("changed deps", {}) if isinstance(entry, dict) else {}).items():
            changed |= {f"{path}:{key}" for key in change} if isinstance(change, dict) else {path}
    return changed


def test_changing_any_input_of_a_stage_makes_it_stale(pipeline_reads):
    """Each file and config key a stage declares or was seen reading, changed in turn: `dvc status`
    calls that stage stale, naming the input (or the declared section holding the key)."""
    root, files, fields = pipeline_reads
    declared = _declared(root)
    readers: dict[str, set[str]] = {}  # a path or "params.yaml:KEY" -> the stages that read it
    for name, stage in declared.items():
        for path in stage["deps"] | {p for p in files[name] if not _own_output(p, stage["outs"])}:
            readers.setdefault(path, set()).add(name)
        undeclared = {k for k in fields[name] if not _covered(k, stage["params"])}
        for key in stage["params"] | undeclared:
            readers.setdefault(f"params.yaml:{key}", set()).add(name)
    assert {"params.yaml:monitoring.reference_rows", "data/processed/test.parquet"} <= set(readers)

    params_file = root / "params.yaml"
    original_params = params_file.read_text()
    missed = []
    for changed, names in sorted(readers.items()):
        path, _, key = changed.partition(":")
        original = (root / path).read_bytes()
        if key:
            params = yaml.safe_load(original_params)
            _change_key(params, key)
            params_file.write_text(yaml.safe_dump(params))
        else:
            (root / path).write_bytes(original + b"\n")
        try:
            status = _status(root)
        finally:
            (root / path).write_bytes(original)
        for name in sorted(names):
            seen = _changed_deps(status, name)
            if not (changed in seen or key and any(changed.startswith(c + ".") for c in seen)):
                missed.append(f"{name} <- {changed}")
    assert not missed, f"changed, yet `dvc status` does not call the stage stale: {missed}"
    assert _status(root) == {}  # all changed back
