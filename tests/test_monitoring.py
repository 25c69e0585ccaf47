"""The monitoring loop end to end: a real trained and registered champion in a temporary MLflow
store, real Prefect flow runs, real PostgreSQL and Redis, batches derived from the demo data."""

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
import redis
import sqlalchemy
from scipy.stats import ks_2samp
from mlflow import MlflowClient
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter

from flows.monitoring import monitoring_flow
from flows.scoring import scoring_flow
from flows.training import training_flow
from pynomaly_core import cli, stages
from pynomaly_core.monitoring import monitor as monitoring, stream
from pynomaly_core.scoring import provenance
from pynomaly_core.config import MonitoringConfig
from pynomaly_core.errors import DataError
from pynomaly_core.monitoring.alerts import NotifyError, send
from pynomaly_core.data.preprocessing import features
from tasks.monitoring import RETRAIN_EVENT
from tests.conftest import ROOT, demo_config, write_config, prefect_harness
from tests.services import free_port, wait_until

MODEL = "breast-cancer-detector"


def small_config(**monitoring):
    """A fast search (one detector, two trials) and the given monitoring settings."""
    config = demo_config(detectors=["iforest"], n_trials=2, cv_folds=2)
    return config.model_copy(update={"monitoring": config.monitoring.model_copy(update=monitoring)})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder with a trained, registered champion, as the current directory, inside a Prefect test server."""
    root = tmp_path_factory.mktemp("monitoring")
    shutil.copytree(ROOT / "data" / "raw", root / "data" / "raw")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = small_config()
        for name in ("validate", "preprocess", "train", "evaluate", "register"):
            stages.STAGES[name](config)
        with prefect_harness():
            yield root
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def batches(project):
    """Three batches from the held-out rows: unchanged, one column shifted, anomalies injected.

    The demo's held-out rows are also the drift reference; test_knn_with_a_target_fpr_... scores
    a batch of new rows."""
    config = small_config()
    held_out = pd.read_parquet(config.paths.test).drop(columns=[config.data.label_column])
    raw = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    folder = project / "batches"
    folder.mkdir()
    held_out.to_csv(folder / "unchanged.csv", index=False)
    shifted = held_out.assign(mean_texture=held_out["mean_texture"] + 2 * raw["mean_texture"].std())
    shifted.to_csv(folder / "shifted.csv", index=False)
    # 25 records far outside the training range in ten columns each, among 100 ordinary ones.
    rng = np.random.default_rng(0)
    injected = held_out.sample(25, random_state=2).reset_index(drop=True)
    columns = list(config.data.columns)
    for i in range(len(injected)):
        for column in rng.choice(columns, 10, replace=False):
            injected.loc[i, column] = 3 * raw[column].quantile(0.99)
    pd.concat([held_out.sample(100, random_state=1), injected]).to_csv(folder / "anomalies.csv", index=False)
    return folder


def test_reference_snapshot_is_logged_with_the_champion(project):
    config = small_config()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    reference = pd.read_parquet(model.unwrap_python_model().reference_path)
    columns = list(config.data.columns)
    assert reference.columns.tolist() == [*columns, "score", "is_anomaly"]
    # Held-out rows, which the model never saw.
    test_rows = pd.read_parquet(config.paths.test)
    assert len(reference) == min(config.monitoring.reference_rows, len(test_rows))
    assert set(map(tuple, reference[columns].to_numpy())) <= set(map(tuple, test_rows[columns].to_numpy()))
    pipeline = joblib.load(config.paths.model)
    np.testing.assert_allclose(reference["score"], pipeline.decision_function(features(reference, config.data)))
    assert (reference["is_anomaly"] == (reference["score"] > pipeline[-1].threshold_)).all()


def test_scoring_flow_writes_rows_quarantine_store_and_run(project, batches, postgres_url):
    table = f"scored_{uuid.uuid4().hex[:8]}"
    config = small_config(store_url=postgres_url, store_table=table)
    batch = pd.read_csv(batches / "unchanged.csv").head(40).astype({"mean_area": object})
    batch.loc[6, "mean_area"] = "unknown"
    batch.to_csv("bad_row.csv", index=False)
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        result = scoring_flow("bad_row.csv", config)
        assert (result.n_rows, result.n_valid, result.n_rejected) == (40, 39, 1)
        assert result.model_uri == f"models:/{MODEL}/1"
        scored = pd.read_parquet(result.output)
        assert len(scored) == 39 and {"score", "is_anomaly"} <= set(scored.columns)
        assert result.alert_rate == pytest.approx(scored["is_anomaly"].mean())
        rejected = pd.read_csv(result.rejected_file)
        assert rejected["_row"].tolist() == [7] and "mean_area: coerce_dtype('float64') (got 'unknown')" in rejected["_errors"][0]
        with engine.connect() as connection:
            stored = pd.read_sql_table(table, connection)
        assert sorted(stored["sample_id"]) == sorted(scored["sample_id"])
        np.testing.assert_allclose(stored.sort_values("sample_id")["score"], scored.sort_values("sample_id")["score"])
        run = MlflowClient().get_run(result.run_id)
        assert run.data.metrics["n_rejected"] == 1 and run.data.metrics["alert_rate"] == pytest.approx(result.alert_rate)
        assert run.data.tags["model_uri"] == result.model_uri
        assert "39" in Artifact.get(f"{config.name}-scoring").data
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


def test_cli_monitor_unchanged_batch_no_drift_no_retraining(project, batches, capsys):
    config_path = write_config(small_config(), project / "small.yaml")
    assert cli.main(["monitor", "--config", str(config_path), "--batch", str(batches / "unchanged.csv"), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert set(verdict) == {"drift_detected", "drifted_columns", "score_drift", "alert_rate", "retrain_triggered"}
    assert verdict["drift_detected"] is False and verdict["retrain_triggered"] is False
    assert verdict["drifted_columns"] == []
    assert verdict["score_drift"]["ks_p_value"] > 0.05 and verdict["score_drift"]["psi"] < 0.25
    reference = pd.read_parquet(mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").unwrap_python_model().reference_path)
    assert verdict["alert_rate"]["expected"] == reference["is_anomaly"].mean() and verdict["alert_rate"]["p_value"] > 0.05
    runs = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("pynomaly").experiment_id], "tags.`pynomaly.stage` = 'monitoring'", order_by=["start_time DESC"]
    )
    latest = runs[0]
    assert latest.data.tags["drift_detected"] == "false" and "retrain.method" not in latest.data.tags
    assert {a.path for a in MlflowClient().list_artifacts(latest.info.run_id, "monitoring")} == {
        "monitoring/unchanged.drift.html", "monitoring/verdict.json"
    }


def _events(name: str) -> list:
    with get_client(sync_client=True) as client:
        for _ in range(40):  # the server stores events asynchronously
            events = client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50).events
            if events:
                return events
            time.sleep(0.25)
    return []


def test_shifted_column_drifts_and_requests_retraining_by_event(project, batches):
    result = monitoring_flow(str(batches / "shifted.csv"), small_config())
    assert result["drift_detected"] and result["drifted_columns"] == ["mean_texture"]
    assert result["retrain_triggered"] and result["retraining"]["method"] == "event"
    assert "mean_texture" in result["retraining"]["reason"]
    html = open(result["report"]).read()
    assert "<html" in html.lower() and "mean_texture" in html
    run = MlflowClient().get_run(result["mlflow_run_id"])
    assert run.data.tags["retrain.method"] == "event" and "mean_texture" in run.data.tags["retrain.reason"]
    assert run.data.metrics["n_drifted_columns"] == 1
    paths = {a.path for a in MlflowClient().list_artifacts(result["mlflow_run_id"], "monitoring")}
    assert "monitoring/shifted.drift.html" in paths and "monitoring/retraining.json" in paths
    assert f"({result['report_uri']})" in Artifact.get("breast-cancer-drift-report").data
    events = _events(RETRAIN_EVENT)
    assert [e.payload["monitoring_run_id"] for e in events] == [result["mlflow_run_id"]]
    assert events[0].resource.id == f"pynomaly.model.{MODEL}" and "mean_texture" in events[0].payload["reason"]


def test_injected_anomalies_drift_the_alert_rate_and_run_the_training_deployment(project, batches):
    deployment_id = training_flow.to_deployment(name="training").apply()
    try:
        result = monitoring_flow(str(batches / "anomalies.csv"), small_config())
        alerts = result["alert_rate"]
        assert alerts["observed"] > 0.2 and alerts["p_value"] < 0.01
        assert any(r.startswith("alert rate") for r in result["reasons"])
        assert result["retrain_triggered"] and result["retraining"]["method"] == "deployment"
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(result["retraining"]["flow_run_id"])
        assert flow_run.deployment_id == deployment_id and flow_run.state.is_scheduled()
        assert {"retrain", "alert_rate"} <= set(flow_run.tags)
        assert flow_run.parameters["config"]["train"]["detectors"] == ["iforest"]
        tags = MlflowClient().get_run(result["mlflow_run_id"]).data.tags
        assert tags["retrain.method"] == "deployment" and tags["retrain.flow_run_id"] == str(flow_run.id)
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)


# Alerts


@pytest.fixture
def receiver():
    """A webhook on 127.0.0.1 recording what Apprise posts; it answers with the statuses queued in `statuses`, then 200."""
    received, statuses, attempts = [], [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = statuses.pop(0) if statuses else 200
            attempts.append(status)
            if status == 200:
                received.append(body)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield SimpleNamespace(port=server.server_port, received=received, statuses=statuses, attempts=attempts)
    server.shutdown()
    server.server_close()


def alerting_config(port_variable: str = "PYNOMALY_TEST_HOOK_PORT"):
    # retrain_on=[]: no retraining events from these runs; the URL's port comes from the environment at send time
    return small_config(notify=[f"json://127.0.0.1:${{{port_variable}}}/"], retrain_on=[], notify_retries=2, notify_retry_delay=0.2)


def test_drifted_batch_alerts_once_with_its_figures_and_links_an_unchanged_one_not(project, batches, receiver, monkeypatch):
    monkeypatch.setenv("PYNOMALY_TEST_HOOK_PORT", str(receiver.port))
    unchanged = monitoring_flow(str(batches / "unchanged.csv"), alerting_config())
    assert not unchanged["drift_detected"] and unchanged["alert"] is None and receiver.received == []

    result = monitoring_flow(str(batches / "shifted.csv"), alerting_config())
    assert result["drift_detected"] and result["alert"] == "sent"
    assert len(receiver.received) == 1
    title, body = receiver.received[0]["title"], receiver.received[0]["message"]
    assert "breast-cancer-detector" in title and "shifted.csv" in title and "features" in title
    assert f"Model: models:/{MODEL}/1" in body and f"Batch: {batches / 'shifted.csv'}" in body
    assert "- features: feature drift in 1 column(s): mean_texture" in body and "[mean_texture p=" in body
    run_id = result["mlflow_run_id"]
    assert f"/get-artifact?path=monitoring%2Fshifted.drift.html&run_uuid={run_id}" in body
    experiment = mlflow.get_experiment_by_name("pynomaly").experiment_id
    assert f"MLflow run: http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id}" in body
    assert MlflowClient().get_run(run_id).data.tags["alert"] == "sent"


def test_an_undelivered_alert_is_retried_and_never_loses_the_verdict(project, batches, receiver, monkeypatch):
    monkeypatch.setenv("PYNOMALY_TEST_HOOK_PORT", str(receiver.port))
    receiver.statuses.append(503)  # the first attempt fails, the retry gets through
    result = monitoring_flow(str(batches / "shifted.csv"), alerting_config())
    assert receiver.attempts == [503, 200] and len(receiver.received) == 1 and result["alert"] == "sent"

    monkeypatch.setenv("PYNOMALY_TEST_HOOK_PORT", str(free_port()))  # nothing listens there
    result = monitoring_flow(str(batches / "shifted.csv"), alerting_config())
    assert result["drift_detected"] and result["drifted_columns"] == ["mean_texture"]
    assert result["alert"].startswith("failed: ") and "not delivered" in result["alert"]
    run = MlflowClient().get_run(result["mlflow_run_id"])
    assert run.data.tags["drift_detected"] == "true" and run.data.tags["alert"].startswith("failed: ")
    assert "monitoring/verdict.json" in {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "monitoring")}
    assert len(receiver.received) == 1  # still the one from the first run


def test_a_batch_that_cannot_be_scored_alerts_and_still_fails(project, batches, receiver, monkeypatch):
    monkeypatch.setenv("PYNOMALY_TEST_HOOK_PORT", str(receiver.port))
    pd.read_csv(batches / "unchanged.csv").assign(mean_area=-1.0).to_csv("all_rejected.csv", index=False)
    with pytest.raises(DataError, match="all_rejected.csv: no valid rows to score"):
        monitoring_flow("all_rejected.csv", alerting_config())
    assert len(receiver.received) == 1
    title, body = receiver.received[0]["title"], receiver.received[0]["message"]
    assert title.endswith("all_rejected.csv: scoring failed")
    assert f"Model: models:/{MODEL}@champion" in body and "Batch: all_rejected.csv" in body
    assert "- scoring failed: DataError: all_rejected.csv: no valid rows to score" in body


def test_secrets_come_from_the_environment_not_the_yaml(monkeypatch):
    with pytest.raises(ValueError, match=r"holds a secret; write it as \$\{ENV_VAR\}"):
        MonitoringConfig(notify=["slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"])
    with pytest.raises(ValueError, match="not a notification URL Apprise knows"):
        MonitoringConfig(notify=["hooks.example.com/alert"])
    assert MonitoringConfig(notify=["slack://${SLACK_TOKENS}"]).notify == ["slack://${SLACK_TOKENS}"]
    monkeypatch.delenv("SLACK_TOKENS", raising=False)
    with pytest.raises(NotifyError, match="environment variable SLACK_TOKENS is not set"):
        send("slack://${SLACK_TOKENS}", "title", "body")


# Streaming


@pytest.fixture(scope="module")
def redis_client():
    """The local Redis server (started here when it is down)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex(("127.0.0.1", 6379)) != 0:
            subprocess.run(["redis-server", "--daemonize", "yes", "--port", "6379", "--save", ""], check=True)
            time.sleep(0.5)
    client = redis.Redis(decode_responses=True)
    client.ping()
    return client


@pytest.fixture
def stream_config(redis_client):
    """Streams with unique names, deleted afterwards."""
    name = f"pynomaly-test-{uuid.uuid4().hex[:8]}"
    settings = {"input": f"{name}:in", "output": f"{name}:out", "dead_letter": f"{name}:dead", "group": "scorers", "batch_size": 25, "block_ms": 50}
    config = small_config(stream=small_config().monitoring.stream.model_copy(update=settings))
    yield config
    redis_client.delete(settings["input"], settings["output"], settings["dead_letter"])


def _produce(client, config, frame) -> list[str]:
    return [client.xadd(config.monitoring.stream.input, record) for record in frame.astype(str).to_dict("records")]


def test_stream_scores_micro_batches_and_reports_bad_events(project, batches, redis_client, stream_config):
    held_out = pd.read_csv(batches / "unchanged.csv").head(60)
    ids = _produce(redis_client, stream_config, held_out)
    bad = redis_client.xadd(stream_config.monitoring.stream.input, {**held_out.astype(str).iloc[0].to_dict(), "mean_radius": "-3"})
    totals = stream.StreamScorer(stream_config, consumer="a").run(idle_exit=True)
    assert totals == {**totals, "batches": 3, "events": 61, "scored": 60, "rejected": 1}
    out = redis_client.xrange(stream_config.monitoring.stream.output)
    results = {fields["event_id"]: fields for _, fields in out}
    assert set(results) == set(ids)
    dead = redis_client.xrange(stream_config.monitoring.stream.dead_letter)
    assert [fields["event_id"] for _, fields in dead] == [bad]
    assert dead[0][1]["mean_radius"] == "-3" and "mean_radius: greater_than_or_equal_to(0" in dead[0][1]["_errors"]
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    expected = model.predict(held_out[list(stream_config.data.columns)])
    np.testing.assert_allclose([float(results[i]["score"]) for i in ids], expected["score"], rtol=1e-9)
    assert [results[i]["id"] for i in ids] == held_out["sample_id"].astype(str).tolist()
    assert redis_client.xpending(stream_config.monitoring.stream.input, "scorers")["pending"] == 0
    files = list((project / "data" / "scored" / "stream").glob("*.parquet"))
    stored = pd.concat(pd.read_parquet(p) for p in files)
    assert set(ids) <= set(stored["event_id"])
    champion = MlflowClient().get_model_version_by_alias(MODEL, "champion").version
    assert {provenance.read(p)["model_uri"] for p in files} == {f"models:/{MODEL}/{champion}"}  # each file names its model


def test_consumer_killed_mid_batch_loses_nothing(project, batches, redis_client, stream_config, monkeypatch):
    options = stream_config.monitoring.stream
    ids = _produce(redis_client, stream_config, pd.read_csv(batches / "unchanged.csv").head(60))

    def killed(*args, **kwargs):
        raise SystemExit("killed while writing the batch")

    crashing = stream.StreamScorer(stream_config, consumer="doomed")
    with monkeypatch.context() as patch:
        patch.setattr(stream, "write_table", killed)  # dies after scoring, before the write and the ack
        with pytest.raises(SystemExit):
            crashing.run()
    pending = redis_client.xpending(options.input, options.group)
    assert pending["pending"] == 25 and pending["consumers"] == [{"name": "doomed", "pending": 25}]
    assert redis_client.xlen(options.output) == 0

    # Another consumer takes the stalled entries over once they are idle long enough.
    survivor_config = stream_config.model_copy(deep=True)
    survivor_config.monitoring.stream.claim_idle_ms = 0
    totals = stream.StreamScorer(survivor_config, consumer="survivor").run(idle_exit=True)
    assert totals["events"] == 60
    delivered = [fields["event_id"] for _, fields in redis_client.xrange(options.output)]
    assert sorted(delivered) == sorted(ids)  # every event once, the stalled ones included
    assert redis_client.xpending(options.input, options.group)["pending"] == 0


def start_redis(port: int, folder: Path) -> subprocess.Popen:
    """A Redis server of the test's own, appending every write to its log (AOF) in `folder`, so a restart keeps the streams."""
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                               "--appendonly", "yes", "--appendfsync", "always", "--save", ""], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"redis-server on port {port} did not start")


def test_redis_restart_under_the_consumer_loses_and_repeats_no_event(project, batches, tmp_path):
    port = free_port()  # never the shared server on 6379
    server = start_redis(port, tmp_path)
    client = redis.Redis(port=port, decode_responses=True)
    name = f"pynomaly-restart-{uuid.uuid4().hex[:8]}"
    settings = {"redis_url": f"redis://127.0.0.1:{port}/0", "input": f"{name}:in", "output": f"{name}:out", "dead_letter": f"{name}:dead",
                "group": "scorers", "batch_size": 25, "block_ms": 200}
    config = small_config(stream=small_config().monitoring.stream.model_copy(update=settings))
    path = write_config(config, project / "stream-restart.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "consumer.log"  # a file, not a pipe: a consumer that logs much never blocks on it
    with open(log, "w") as output:
        consumer = subprocess.Popen([sys.executable, "-m", "pynomaly_core.cli", "stream", "--config", str(path), "--consumer", "c1"],
                                    cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT)
    rows = pd.read_csv(batches / "unchanged.csv")
    try:
        before = _produce(client, config, rows.head(100))
        wait_until(lambda: client.xlen(settings["output"]) == 100, 180, "the first 100 events scored")
        server.kill()  # a crash, while the consumer waits in XREADGROUP
        server.wait()
        time.sleep(2)
        assert consumer.poll() is None  # still there, retrying
        server = start_redis(port, tmp_path)
        after = _produce(client, config, rows.iloc[100:])
        wait_until(lambda: client.xlen(settings["output"]) == len(rows), 120, "every event scored after the restart")
        consumer.send_signal(signal.SIGINT)
        consumer.wait(timeout=60)
        output = log.read_text()
        assert "unreachable" in output and "retrying in" in output, output
        assert "Traceback" not in output
        delivered = [fields["event_id"] for _, fields in client.xrange(settings["output"])]
        assert sorted(delivered) == sorted(before + after)  # every event, each once
        assert client.xpending(settings["input"], "scorers")["pending"] == 0
        assert client.xlen(settings["dead_letter"]) == 0
    finally:
        if consumer.poll() is None:
            consumer.kill()
        server.kill()
        server.wait()


# The drift reference


def _synthetic(n: int, seed: int, anomaly_share: float = 0.02) -> pd.DataFrame:
    """Correlated normal rows, a share of them scattered far out as labelled anomalies."""
    rng = np.random.default_rng(seed)
    columns = [f"x{i}" for i in range(6)]
    mixing = np.random.default_rng(0).normal(size=(6, 6))  # the same distribution for every seed
    values = rng.normal(size=(n, 6)) @ mixing + 10
    anomaly = rng.random(n) < anomaly_share
    values[anomaly] += rng.choice([-1, 1], size=(anomaly.sum(), 6)) * rng.uniform(6, 10, size=(anomaly.sum(), 6))
    ids = [f"s{seed}-{i}" for i in range(n)]
    return pd.DataFrame(values, columns=columns).assign(row_id=ids, anomaly=anomaly.astype(int))


def test_knn_with_a_target_fpr_raises_no_alarm_on_an_unchanged_batch(tmp_path, monkeypatch):
    # KNN scores the rows it was fitted on low, and a target FPR flags another share than
    # `train.contamination`: a reference of training rows, or the contamination as expected alert
    # rate, would flag this batch on scores and on alerts.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Path("data/raw").mkdir(parents=True)
    _synthetic(2000, seed=1).to_csv("data/raw/synthetic.csv", index=False)
    demo = demo_config()
    config = demo.model_validate({
        **demo.model_dump(),
        "name": "synthetic",
        "seed": 2,  # the search then picks KNN(9, mean), which scores the rows it was fitted on low
        "data": {"source": "data/raw/synthetic.csv", "id_column": "row_id", "label_column": "anomaly",
                 "columns": {f"x{i}": {} for i in range(6)}},
        "train": {**demo.train.model_dump(), "detectors": ["knn"], "ensemble_size": 1, "n_trials": 2, "cv_folds": 2},
        "threshold": {"target_fpr": 0.02},
        "registry": {"model_name": "synthetic-knn", "gate_metric": "roc_auc"},
    })
    for name in ("validate", "preprocess", "train", "evaluate", "register"):
        stages.STAGES[name](config)
    assert json.loads(Path(config.paths.training).read_text())["detector"] == "knn"

    unchanged = _synthetic(1000, seed=2).drop(columns="anomaly")  # new rows from the same distribution
    unchanged.to_csv("unchanged.csv", index=False)
    pipeline = joblib.load(config.paths.model)
    fitted_scores = pipeline.decision_function(features(pd.read_parquet(config.paths.train), config.data))
    assert ks_2samp(fitted_scores, pipeline.decision_function(features(unchanged, config.data))).pvalue < 1e-6  # the premise
    result = monitoring.monitor_drift(config, monitoring.score_batch(config, "unchanged.csv"))
    assert result.judged and not result.drift_detected, result.reasons
    alerts = result.alert_rate
    assert alerts["reference_rows"] == config.monitoring.reference_rows
    assert alerts["expected"] < 0.07 and abs(alerts["observed"] - alerts["expected"]) < 0.03
    reference = pd.read_parquet(mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model().reference_path)
    held_out, fitted = (set(pd.read_parquet(path)["x0"]) for path in (config.paths.test, config.paths.train))
    assert set(reference["x0"]) <= held_out and not set(reference["x0"]) & fitted

    # The same check still sees a batch with four times the anomalies.
    _synthetic(1000, seed=3, anomaly_share=0.08).drop(columns="anomaly").to_csv("anomalous.csv", index=False)
    result = monitoring.monitor_drift(config, monitoring.score_batch(config, "anomalous.csv"))
    assert "alert_rate" in result.signals, result.reasons
