"""`pynomaly score --engine spark` (Spark local[2], MLflow's spark_udf) and `--engine dask` (a local
cluster of 2 workers) score the demo data exactly as the default engine: every score to 1e-9,
the same rejected rows with the same reasons."""

import glob
import shutil

import mlflow
from mlflow import MlflowClient
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pynomaly_core import stages
from pynomaly_core.scoring import provenance
from pynomaly_core.config import EngineOptions
from pynomaly_core.errors import DataError
from pynomaly_core.scoring import score_with_engine
from pynomaly_core.scoring.files import load_model
from tests.conftest import MODEL_URI, ROOT, demo_config

BAD_ROWS = {7: ("mean_area", -1.0), 100: ("mean_texture", np.inf), 390: ("worst_radius", np.nan)}  # 0-based row: (column, value); the second file has none


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A registered champion, and the demo rows with three bad ones as a folder of three Parquet files."""
    root = tmp_path_factory.mktemp("engines")
    shutil.copytree(ROOT / "data" / "raw", root / "data" / "raw")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name in ("validate", "preprocess", "train", "evaluate", "register"):
            stages.STAGES[name](demo_config(detectors=["iforest"], n_trials=2, cv_folds=2))
        rows = pd.read_csv(root / "data" / "raw" / "breast_cancer.csv").drop(columns=["malignant"])
        for row, (column, value) in BAD_ROWS.items():
            rows.loc[row, column] = value
        (root / "batch").mkdir()
        for part, start in enumerate(range(0, len(rows), 150)):
            pq.write_table(pa.Table.from_pandas(rows.iloc[start:start + 150], preserve_index=False), root / "batch" / f"part-{part}.parquet")
        reference = score_with_engine(EngineOptions(), MODEL_URI, "batch", "reference.parquet")
        yield root, reference
        mlflow.set_tracking_uri(None)


def _same_as_default_engine(report: dict, reference: dict, output: str) -> None:
    # The output records the version that scored it (beside Spark's and Dask's folders; inside the default engine's Parquet file).
    assert report["model"] == reference["model"] == provenance.read(output) == provenance.read("reference.parquet")
    assert report["model"]["model_uri"] == "models:/breast-cancer-detector/1" and provenance.side_file(output).exists()
    assert {k: report[k] for k in ("n_rows", "n_valid", "n_rejected", "n_anomalies")} == \
           {k: reference[k] for k in ("n_rows", "n_valid", "n_rejected", "n_anomalies")}
    expected = pd.read_parquet("reference.parquet")
    scored = pd.read_parquet(output).sort_values("sample_id").reset_index(drop=True)
    assert scored.columns.tolist() == expected.columns.tolist()
    assert scored["sample_id"].tolist() == sorted(expected["sample_id"])
    expected = expected.sort_values("sample_id").reset_index(drop=True)
    np.testing.assert_allclose(scored["score"], expected["score"], rtol=0, atol=1e-9)
    assert scored["is_anomaly"].tolist() == expected["is_anomaly"].tolist()
    pd.testing.assert_frame_equal(scored.drop(columns=["score"]), expected.drop(columns=["score"]), check_dtype=False)

    expected_rejected = pd.read_csv("reference.rejected.csv")
    assert expected_rejected["_row"].tolist() == [row + 1 for row in BAD_ROWS]
    files = sorted(glob.glob(f"{report['rejected_file']}/*.csv")) or [report["rejected_file"]]  # Spark writes a folder
    rejected = pd.concat([pd.read_csv(f) for f in files]).sort_values("_row").reset_index(drop=True)
    assert rejected["_row"].tolist() == expected_rejected["_row"].tolist()
    assert rejected["_errors"].tolist() == expected_rejected["_errors"].tolist()
    assert rejected["sample_id"].tolist() == expected_rejected["sample_id"].tolist()


def test_spark_scores_like_the_default_engine(project):
    _, reference = project
    report = score_with_engine(EngineOptions(name="spark", spark_master="local[2]"), MODEL_URI, "batch", "spark.parquet")
    _same_as_default_engine(report, reference, "spark.parquet")


def test_dask_scores_like_the_default_engine_loading_the_model_once_per_worker(project):
    """On a cluster of 2 workers given by its scheduler address; the 3 partitions are scored by
    2 model loads, one per worker (each worker's log says when it loaded the model). Each partition
    is scored in batches of 40 rows, so the bad rows' numbers count through batches and partitions."""
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    _, reference = project
    assert dd.read_parquet("batch").npartitions == 3
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        report = score_with_engine(EngineOptions(name="dask", scheduler=cluster.scheduler_address), MODEL_URI, "batch", "dask.parquet",
                                   batch_rows=40)
        loads = {worker: sum("pynomaly: loaded models:/breast-cancer-detector/1" in line for _, line in logs)
                 for worker, logs in client.get_worker_logs().items()}
    _same_as_default_engine(report, reference, "dask.parquet")
    assert list(loads.values()) == [1, 1]


def test_engines_refuse_what_they_cannot_read(project):
    root, _ = project
    pd.read_parquet(root / "batch").drop(columns=["mean_area"]).to_parquet("no_area.parquet")
    for engine in ("spark", "dask"):
        with pytest.raises(DataError, match=r"no_area.parquet: missing required column\(s\) mean_area"):
            score_with_engine(EngineOptions(name=engine, spark_master="local[2]"), MODEL_URI, "no_area.parquet", f"{engine}-out.parquet")


def test_dask_refuses_a_model_version_that_does_not_exist(project):
    """The client reads only the model's schema (data_config.yaml): a version that is not registered stops it there."""
    with pytest.raises(DataError, match=r"cannot load model models:/breast-cancer-detector/99"):
        score_with_engine(EngineOptions(name="dask"), "models:/breast-cancer-detector/99", "batch", "dask-99.parquet")


def test_scoring_flow_takes_the_engine_as_a_parameter(project):
    """The Prefect scoring flow with `engine` set scores the batch on Spark: a deployment can score on the cluster."""
    from flows.scoring import scoring_flow
    from tests.conftest import prefect_harness

    _, reference = project
    with prefect_harness():
        result = scoring_flow("batch", demo_config(), engine=EngineOptions(name="spark", spark_master="local[2]"))
    assert (result.n_rows, result.n_valid, result.n_rejected) == (reference["n_rows"], reference["n_valid"], reference["n_rejected"])
    assert result.model_uri == "models:/breast-cancer-detector/1" and result.output == "data/scored/batch.parquet"
    scored = pd.read_parquet(result.output).sort_values("sample_id")
    expected = pd.read_parquet("reference.parquet").sort_values("sample_id")
    np.testing.assert_allclose(scored["score"], expected["score"], rtol=0, atol=1e-9)
    assert MlflowClient().get_run(result.run_id).data.metrics["n_rejected"] == 3


def test_dask_scores_an_empty_part_file_as_no_rows(project):
    """An empty partition (an empty part file) adds no rows, where validating it would fail the whole job."""
    from pynomaly_core.scoring.dask import score_partition

    root, _ = project
    empty = pd.read_parquet(root / "batch").head(0)
    out = score_partition(empty, "batch", partition_info={"number": 3})
    assert out.empty and {"score", "is_anomaly", "_row", "_errors"} <= set(out.columns)


def test_every_default_engine_output_records_the_model_that_scored_it(project):
    """A Parquet file keeps the record in its metadata; a CSV output gets it in a side file. The record names
    the version the alias pointed to, the model's threshold and what the score means."""
    _, reference = project
    model = load_model(MODEL_URI).unwrap_python_model()
    record = provenance.read("reference.parquet")
    assert record == {"model_uri": "models:/breast-cancer-detector/1", "threshold": float(model.pipeline[-1].threshold_),
                      "score_meaning": record["score_meaning"]} and "higher is more anomalous" in record["score_meaning"]
    assert not provenance.side_file("reference.parquet").exists()
    report = score_with_engine(EngineOptions(), MODEL_URI, "batch", "as-csv.csv")
    assert provenance.read("as-csv.csv") == report["model"] == record and provenance.side_file("as-csv.csv").name == "as-csv.model.json"
