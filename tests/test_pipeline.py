"""The training flow end to end: a real Prefect flow run, a real MLflow store, the CLI."""

import json
import os
import shutil
import subprocess
import sys

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.training import training_flow
from pynomaly_core import stages
from pynomaly_core.data.preprocessing import features
from pynomaly_core.tracking.store import file_md5
from tests.conftest import ROOT, demo_config, prefect_harness

MODEL = "breast-cancer-detector"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder where the training flow has run once, as the current directory."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "data" / "raw", root / "data" / "raw")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with prefect_harness():
            state = training_flow(demo_config(strategy="meta"), return_state=True)  # the meta strategy end to end, as `make run` with strategy: meta
        yield root, state
        mlflow.set_tracking_uri(None)


@pytest.fixture
def in_project(project, monkeypatch):
    root, _ = project
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow/mlflow.db")
    return root


def test_flow_run_completes_with_a_champion(project):
    _, state = project
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.validation.n_valid == 393
    assert summary.training.criterion == "meta_predicted_aucroc"  # the default label-free selection
    assert summary.training.detector == "rank_ensemble" and len(summary.training.params["members"]) == 3
    assert summary.evaluation.metrics["roc_auc"] > 0.8
    assert summary.registration.version == "1" and summary.registration.aliases == ["champion", "challenger"]
    # The saved pipeline's size is recorded; the demo's is far below registry.max_model_mb.
    assert 0 < summary.registration.model_size_mb < 50 and summary.registration.model_size_warning is None
    assert len(summary.explanation.rows) == 10 and len(summary.explanation.rows[0]["top_features"]) == 3
    assert dict(summary.rows())["labels that trained it"] == "none (unsupervised selection)"  # `pynomaly run`'s table


def test_mlflow_run_holds_lineage_metrics_and_artifacts(project, in_project):
    summary = project[1].result()
    client = MlflowClient()
    run = client.get_run(summary.training.run_id)
    assert run.data.tags["data_md5"] == file_md5(ROOT / "data" / "raw" / "breast_cancer.csv")
    assert run.data.tags["git_commit"] and run.data.tags["config_digest"]
    assert run.data.params["detector"] == summary.training.detector
    assert run.data.metrics["roc_auc"] == pytest.approx(summary.evaluation.metrics["roc_auc"])
    assert run.data.metrics["model_size_mb"] == summary.registration.model_size_mb
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["breast-cancer-train"]
    assert json.loads(run.inputs.dataset_inputs[0].dataset.source) == {"uri": str(in_project / "data" / "raw" / "breast_cancer.csv")}
    artifacts = {a.path for path in ("", "evaluation", "explanation") for a in client.list_artifacts(run.info.run_id, path)}
    assert {"config.yaml", "evaluation/roc.png", "evaluation/score_histogram.png", "explanation/explanation.png"} <= artifacts
    metrics = json.loads(open("reports/metrics.json").read())  # the DVC metrics file
    assert metrics["roc_auc"] == pytest.approx(summary.evaluation.metrics["roc_auc"])
    assert pd.read_csv("reports/plots/roc.csv").columns.tolist() == ["fpr", "tpr"]


def test_logged_datasets_name_their_file_and_hold_no_integer_columns(workdir, demo_frame):
    import warnings

    from mlflow.types import DataType

    from pynomaly_core.tracking.store import table_source

    config = demo_config()
    rows = demo_frame.astype({"malignant": "Int64"})  # as validation leaves it: unknown labels are missing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = stages.training_dataset(config, rows)
        entity = dataset._to_mlflow_entity()  # what log_input stores: source and schema
        batch = table_source("batch.csv")  # a scoring batch's source
    assert [str(w.message) for w in caught] == []  # neither "interpreted in multiple ways" nor the integer-column hint
    assert entity.source_type == "local" and json.loads(entity.source) == {"uri": str(workdir / "data" / "raw" / "breast_cancer.csv")}
    assert batch.to_dict() == {"uri": str(workdir / "batch.csv")}
    assert list(dataset.df.columns) == [*config.data.columns, "malignant"]  # the model's inputs and the label
    assert {DataType.double} == set(dataset.schema.input_types())
    assert table_source("postgresql+psycopg://user:secret@db/x", query="SELECT 1") is None  # no MLflow type; the URL may hold a password


def test_training_dataset_digest_is_mlflows_without_testing_every_cell(demo_frame, monkeypatch):
    from mlflow.data.digest_utils import compute_pandas_digest

    from pynomaly_core.tracking.store import pandas_digest

    frame = demo_frame.head(50).assign(
        city=["a", "b"] * 25,  # only strings: hashed
        mixed=["a", 1.5] * 25,  # not only strings: left out
        missing=["a", np.nan] * 25,
        typed=pd.array(["x", "y"] * 25, dtype="string"),
        count=np.arange(50),
    )
    expected = [compute_pandas_digest(frame), compute_pandas_digest(frame.iloc[:, :30])]
    # MLflow's own digest applies `type` to every cell of the frame (DataFrame.map): ours must not.
    monkeypatch.setattr(pd.DataFrame, "map", lambda *a, **k: pytest.fail("DataFrame.map over every cell"))
    assert [pandas_digest(frame), pandas_digest(frame.iloc[:, :30])] == expected
    dataset = stages.training_dataset(demo_config(), demo_frame.astype({"malignant": "Int64"}))
    monkeypatch.undo()
    assert dataset.digest == compute_pandas_digest(dataset.df)[:8]


def test_each_project_folder_logs_to_its_own_store(tmp_path, monkeypatch):
    """Two project folders in one process, the first deleted before the second runs (what
    benchmarks/overhead.py does): the second run lands in the second folder's store, not through
    MLflow's cached engine to the first, deleted database ("attempt to write a readonly database")."""
    from pynomaly_core.tracking import store as tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = demo_config()
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        uri = tracking.setup(config.tracking)
        with mlflow.start_run() as run:
            mlflow.log_metric("x", 1.0)
        assert uri == f"sqlite:///{folder}/mlflow/mlflow.db"
        assert run.info.artifact_uri.startswith((folder / "mlflow").as_uri())
        assert "MLFLOW_TRACKING_URI" not in os.environ  # what the user set stays the only override
        monkeypatch.chdir(tmp_path)
        shutil.rmtree(folder)
    mlflow.set_tracking_uri(None)


def test_registered_model_reloads_and_scores_identically(in_project):
    config = demo_config()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    test = pd.read_parquet(config.paths.test)
    pipeline = joblib.load(config.paths.model)
    predicted = model.predict(test[list(config.data.columns)])
    assert predicted.columns.tolist() == ["score", "is_anomaly"]
    expected = pipeline.decision_function(features(test, config.data))
    np.testing.assert_allclose(predicted["score"], expected, rtol=0, atol=1e-6)
    assert (predicted["is_anomaly"] == (expected > pipeline[-1].threshold_)).all()
    assert [c.name for c in model.metadata.signature.outputs.inputs] == ["score", "is_anomaly"]


def test_champion_gate_both_ways(in_project):
    config = demo_config()
    client = MlflowClient()
    metrics_path = config.paths.metrics
    original = json.loads(open(metrics_path).read())

    def register_with(roc_auc):
        with open(metrics_path, "w") as handle:
            json.dump({**original, "roc_auc": roc_auc}, handle)
        return stages.register(config)

    try:
        champion_before = str(client.get_model_version_by_alias(MODEL, "champion").version)
        same = stages.register(config)
        assert not same.promoted and same.aliases == ["challenger"]  # a tie does not dethrone the champion
        worse = register_with(original["roc_auc"] - 0.1)
        assert not worse.promoted and worse.previous_champion == champion_before
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == champion_before
        assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == worse.version
        better = register_with(min(1.0, original["roc_auc"] + 0.01) + 1e-9)
        assert better.promoted and better.aliases == ["champion", "challenger"]
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == better.version
    finally:
        with open(metrics_path, "w") as handle:
            json.dump(original, handle)


def _cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    pynomaly = os.path.join(os.path.dirname(sys.executable), "pynomaly")
    return subprocess.run([pynomaly, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_scores_a_file_and_keeps_bad_rows_aside(in_project, demo_frame):
    batch = demo_frame.drop(columns=["malignant"]).head(20).astype({"mean_area": object})
    batch.loc[4, "mean_area"] = "unknown"
    batch.to_csv("batch.csv", index=False)
    result = _cli("score", "--model", f"models:/{MODEL}@champion", "batch.csv", "scored.parquet", cwd=in_project)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["n_valid"], report["n_rejected"]) == (19, 1)
    scored = pd.read_parquet("scored.parquet")
    assert scored.columns.tolist() == [*batch.columns, "score", "is_anomaly"]
    assert scored["sample_id"].tolist() == batch.drop(index=4)["sample_id"].tolist()
    rejected = pd.read_csv("scored.rejected.csv")
    assert rejected["_row"].tolist() == [5] and "mean_area: coerce_dtype('float64') (got 'unknown')" in rejected["_errors"][0]


def test_cli_reports_bad_input_clearly(in_project):
    pd.DataFrame({"x": [1.0]}).to_csv("wrong.csv", index=False)
    result = _cli("score", "--model", f"models:/{MODEL}@champion", "wrong.csv", "out.csv", cwd=in_project)
    assert result.returncode == 2
    assert "pynomaly: error: wrong.csv: missing required column(s) mean_radius" in result.stderr
    result = _cli("score", "--model", f"models:/{MODEL}@nope", "wrong.csv", "out.csv", cwd=in_project)
    assert result.returncode == 2 and "cannot load model models:/breast-cancer-detector@nope" in result.stderr


def test_cli_lists_detectors_with_tags(tmp_path):
    result = _cli("detectors", "--json", cwd=tmp_path)
    detectors = {d["name"]: d for d in json.loads(result.stdout)}
    assert len(detectors) >= 10
    assert detectors["iforest"]["backend"] == "pyod" and detectors["sk_lof"]["backend"] == "sklearn"
    assert detectors["iforest"]["input"] == "tabular"
