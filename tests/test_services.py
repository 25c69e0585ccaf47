"""The production path against real servers: infra/local/services.sh starts PostgreSQL-backed
MLflow and Prefect servers, both asking for credentials, and a process worker; the training
deployment runs on that worker."""

import base64
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import threading
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import psutil
import psycopg
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from flows.scoring import scoring_flow
from tests.conftest import ROOT, demo_config
from tests.services import drop_databases, free_port, http_status, make_services, wait_until

MODEL = "breast-cancer-detector"


PG_PASSWORD = "pg-" + secrets.token_hex(12)  # the local server trusts loopback, so it is ignored there: only where it goes is checked
SOURCED = {"PREFECT_API_AUTH_STRING": "admin:from-a-sourced-shell", "MLFLOW_TRACKING_USERNAME": "pipeline",
           "MLFLOW_TRACKING_PASSWORD": "from-a-sourced-shell"}


@pytest.fixture(scope="module")
def services(tmp_path_factory, postgres_url):
    services = make_services(tmp_path_factory.mktemp("services"))
    # `up` from a shell that sourced .services/env (as `make services` after a restart is): the client credentials it
    # holds must reach no server.
    services.env.update({"PG_PASSWORD": PG_PASSWORD, **SOURCED})
    drop_databases(*services.databases())
    started = services.run("up")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield services
    finally:
        services.run("down", timeout=120)
        drop_databases(*services.databases())


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def small_config(folder, **train):
    """The demo config with a short search, writing every output under `folder`."""
    config = demo_config(**{"detectors": ["iforest", "hbos", "copod"], "n_trials": 3, **train})
    paths = {key: str(folder / value) for key, value in config.paths.model_dump().items()}
    data = config.data.model_copy(update={"source": str(ROOT / "data" / "raw" / "breast_cancer.csv")})
    return config.model_copy(update={"paths": config.paths.model_copy(update=paths), "data": data})


def test_up_fails_clearly_when_a_port_is_taken(tmp_path):
    services = make_services(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(services.env["MLFLOW_PORT"])))
        taken.listen()
        result = services.run("up", timeout=60)
    assert result.returncode == 1
    assert f"port {services.env['MLFLOW_PORT']} for mlflow is already in use" in result.stderr
    assert not list(tmp_path.glob("*.pid"))  # nothing was started


def test_credentials_are_random_private_and_not_in_the_env_file(services):
    credentials = services.credentials()
    assert stat.S_IMODE((services.state / "credentials").stat().st_mode) == 0o600
    assert stat.S_IMODE((services.state / "basic_auth.ini").stat().st_mode) == 0o600  # it holds the admin password
    secrets = [credentials[key] for key in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_READER_PASSWORD",
                                            "MLFLOW_FLASK_SERVER_SECRET_KEY")]
    secrets.append(credentials["PREFECT_AUTH_STRING"].removeprefix("admin:"))
    assert len(set(secrets)) == 5 and min(map(len, secrets)) >= 32
    env_file = (services.state / "env").read_text()
    assert not [secret for secret in secrets if secret in env_file]
    # Sourcing it points a command at the servers as the pipeline user.
    sourced = services.sourced_env()
    assert sourced["MLFLOW_TRACKING_URI"] == services.mlflow_uri and sourced["PREFECT_API_URL"] == services.prefect_api
    assert (sourced["MLFLOW_TRACKING_USERNAME"], sourced["MLFLOW_TRACKING_PASSWORD"]) == ("pipeline", credentials["MLFLOW_PIPELINE_PASSWORD"])
    assert sourced["PREFECT_API_AUTH_STRING"] == credentials["PREFECT_AUTH_STRING"]


def test_each_server_refuses_requests_without_credentials(services):
    credentials = services.credentials()
    experiments = f"{services.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    flows = f"{services.prefect_api}/flows/filter"
    assert http_status(experiments) == 401
    assert http_status(experiments, auth=f"pipeline:{credentials['MLFLOW_READER_PASSWORD']}") == 401
    for user in ("ADMIN", "PIPELINE", "READER"):
        assert http_status(experiments, auth=f"{credentials[f'MLFLOW_{user}_USERNAME']}:{credentials[f'MLFLOW_{user}_PASSWORD']}") == 200
    assert http_status(flows, "POST", {}) == 401
    assert http_status(flows, "POST", {}, auth="admin:wrong") == 401
    assert http_status(flows, "POST", {}, auth=credentials["PREFECT_AUTH_STRING"]) == 200
    assert http_status(f"{services.mlflow_uri}/health") == 200  # health checks stay open, for probes


def test_the_prefect_ui_sends_its_api_calls_to_its_own_server(services):
    """Issue 27, 1: the UI's browser code sends the auth string to `api_url`; it must be this server, not port 4200."""
    request = urllib.request.Request(f"http://127.0.0.1:{services.env['PREFECT_PORT']}/ui-settings")
    request.add_header("Authorization", "Basic " + base64.b64encode(services.credentials()["PREFECT_AUTH_STRING"].encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        settings = json.loads(response.read())
    assert settings["api_url"] == services.prefect_api


def test_the_database_password_is_on_no_command_line_and_in_no_file_others_may_read(services):
    """Issue 27, 2: `ps` shows every user every command line; .services/ and what it holds are the owner's only."""
    shown = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert not [line for line in shown if PG_PASSWORD in line]
    assert stat.S_IMODE(services.state.stat().st_mode) == 0o700
    holders = [path for path in services.state.rglob("*") if path.is_file() and PG_PASSWORD.encode() in path.read_bytes()]
    assert holders == [services.state / "pgpass"] and stat.S_IMODE(holders[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((services.state / "basic_auth.db").stat().st_mode) == 0o600
    assert [path for path in services.state.iterdir() if path.is_file() and path.stat().st_mode & 0o077] == []
    sourced = services.sourced_env()
    exported = {key: value for key, value in sourced.items() if key != "PG_PASSWORD"}  # the test's own setting
    assert sourced["PGPASSFILE"] == str(services.state / "pgpass") and PG_PASSWORD not in str(exported)
    workbench = psutil.Process(services.pid("workbench")).environ()
    assert workbench["PGPASSFILE"] == str(services.state / "pgpass") and "@127.0.0.1" in workbench["PYNOMALY_DB_URL"]


def test_the_servers_hold_no_client_credentials(services):
    """Issue 27, 4: the Prefect auth string and the pipeline's MLflow password reach only the roles that use them."""
    for name in ("mlflow", "prefect"):
        environment = psutil.Process(services.pid(name)).environ()
        assert not set(SOURCED) & set(environment), name
    assert "MLFLOW_TRACKING_PASSWORD" not in psutil.Process(services.pid("prefect")).environ()


def test_the_reader_cannot_create_models_or_experiments(services):
    """Issue 27, 3: MLflow lets any signed-in user create a model name and own it; only the admin and the pipeline may."""
    credentials = services.credentials()
    reader, pipeline = f"reader:{credentials['MLFLOW_READER_PASSWORD']}", f"pipeline:{credentials['MLFLOW_PIPELINE_PASSWORD']}"
    api = f"{services.mlflow_uri}/api/2.0/mlflow"
    assert http_status(f"{api}/registered-models/create", "POST", {"name": "wine-detector"}, auth=reader) == 403
    assert http_status(f"{api}/experiments/create", "POST", {"name": "readers-own"}, auth=reader) == 403
    assert http_status(f"{services.mlflow_uri}/ajax-api/2.0/mlflow/registered-models/create", "POST", {"name": "wine-detector"}, auth=reader) == 403
    assert http_status(f"{api}/registered-models/get?name=wine-detector", auth=pipeline) == 404  # nothing was created
    assert http_status(f"{api}/registered-models/create", "POST", {"name": "pipeline-may-create"}, auth=pipeline) == 200
    assert http_status(f"{api}/registered-models/delete", "DELETE", {"name": "pipeline-may-create"}, auth=pipeline) == 200
    assert http_status(f"{api}/registered-models/create", "POST", {"name": "x"}, auth="reader:wrong") == 401


def test_servers_are_healthy_and_keep_their_state_in_postgres(services):
    credentials = services.credentials()
    status = services.run("status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.count("healthy") == 4
    tables = {}
    for key, table in (("MLFLOW_DB", "registered_models"), ("PREFECT_DB", "work_pool"), ("WORKBENCH_DB", "labels")):
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{services.env[key]}") as connection:
            tables[key] = connection.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = %s", [table]).fetchone()[0]
    assert tables == {"MLFLOW_DB": 1, "PREFECT_DB": 1, "WORKBENCH_DB": 1}  # the workbench migrated its database
    again = services.run("up")
    assert again.returncode == 0 and "mlflow already running" in again.stdout
    assert services.credentials() == credentials  # created once: the servers' users depend on them


def test_deployed_training_runs_on_the_worker_and_registers_on_the_server(services, tmp_path, monkeypatch):
    # What `make deploy` runs: the deployments are registered with what `source .services/env` sets.
    deployed = subprocess.run(["bash", "-c", f". {services.state}/env && python -m flows.deploy --config configs/demo.yaml"],
                              cwd=ROOT, env=services.env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    sourced = services.sourced_env()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, sourced[key])
    with temporary_settings({PREFECT_API_URL: services.prefect_api, PREFECT_API_AUTH_STRING: sourced["PREFECT_API_AUTH_STRING"]}):
        config = small_config(tmp_path)
        # What the UI's "Run" button does: a flow run of the deployment, picked up by the worker.
        flow_run = run_deployment("training/training", parameters={"config": config.model_dump(mode="json")}, timeout=600, poll_interval=2)
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(flow_run.deployment_id)
    assert flow_run.state.is_completed(), flow_run.state.message
    assert flow_run.work_pool_name == services.env["PREFECT_WORK_POOL"]
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    assert deployment.parameters["config"]["train"]["n_trials"] == 30  # the default: configs/demo.yaml
    assert "PipelineConfig" in deployment.parameter_openapi_schema["definitions"]

    client = MlflowClient(tracking_uri=services.mlflow_uri)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1" and set(champion.aliases) == {"champion", "challenger"}
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{services.env['MLFLOW_DB']}") as connection:
        rows = connection.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias", [MODEL]).fetchall()
    assert rows == [("challenger", 1), ("champion", 1)]
    assert (tmp_path / "reports" / "registration.json").exists()  # the config's paths, as passed at run time
    # The worker's environment put the Optuna study on PostgreSQL.
    studies = optuna.get_all_study_summaries(services.optuna_storage)
    assert len(studies) == 1 and studies[0].n_trials == 3


def test_reader_may_read_the_registry_but_not_change_it(services):
    credentials = services.credentials()
    reader = f"reader:{credentials['MLFLOW_READER_PASSWORD']}"
    api = f"{services.mlflow_uri}/api/2.0/mlflow"
    alias = f"{api}/registered-models/alias?name={MODEL}&alias=champion"
    assert http_status(alias, auth=reader) == 200
    assert http_status(f"{api}/registered-models/alias", "POST", {"name": MODEL, "alias": "champion", "version": "1"}, auth=reader) == 403
    assert http_status(f"{api}/model-versions/delete", "DELETE", {"name": MODEL, "version": "1"}, auth=reader) == 403
    assert http_status(f"{api}/registered-models/delete", "DELETE", {"name": MODEL}, auth=reader) == 403
    assert http_status(alias, auth=f"pipeline:{credentials['MLFLOW_PIPELINE_PASSWORD']}") == 200  # still there


def test_backup_restores_into_a_fresh_database_and_the_champion_scores_the_same(services, tmp_path, monkeypatch):
    sourced = services.sourced_env()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, sourced[key])
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{services.env['WORKBENCH_DB']}", autocommit=True) as connection:
        connection.execute("""INSERT INTO audit_log ("user", action, detail) VALUES ('ann', 'label', 'backed up')""")
    backup = tmp_path / "backup"
    made = services.run("backup", str(backup))
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in backup.iterdir()) == ["artifacts.tar.gz", "basic_auth.db", "mlflow.dump", "workbench.dump"]
    assert services.run("backup", str(backup)).returncode == 1  # never over an earlier backup

    fresh = make_services(tmp_path / "restored")
    for key in ("MLFLOW_DB", "WORKBENCH_DB"):
        fresh.env[key] = services.env[key] + "_restored"
    drop_databases(fresh.env["MLFLOW_DB"], fresh.env["WORKBENCH_DB"])
    port = free_port()
    server = None
    try:
        assert "is not a backup" in fresh.run("restore", str(tmp_path)).stderr
        restored = fresh.run("restore", str(backup))
        assert restored.returncode == 0, restored.stderr
        assert "is not empty" in fresh.run("restore", str(backup)).stderr  # never over live data
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{fresh.env['WORKBENCH_DB']}") as connection:
            assert connection.execute("SELECT \"user\", detail FROM audit_log WHERE action = 'label'").fetchall() == [("ann", "backed up")]
        server = subprocess.Popen(
            ["mlflow", "server", "--backend-store-uri", f"postgresql+psycopg://postgres@127.0.0.1:5432/{fresh.env['MLFLOW_DB']}",
             "--artifacts-destination", str(fresh.state / "artifacts"), "--workers", "1", "--host", "127.0.0.1", "--port", str(port)],
            env=fresh.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        copy_uri = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(f"{copy_uri}/health") == 200, 180, "the MLflow server on the restored database", poll=2)
        assert registry(MlflowClient(tracking_uri=copy_uri)) == registry(MlflowClient(tracking_uri=services.mlflow_uri))
        rows = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns=["malignant"])
        predictions = []
        for uri in (services.mlflow_uri, copy_uri):
            mlflow.set_tracking_uri(uri)
            predictions.append(mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(rows))
        pd.testing.assert_frame_equal(predictions[0], predictions[1])
    finally:
        mlflow.set_tracking_uri(None)
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        drop_databases(fresh.env["MLFLOW_DB"], fresh.env["WORKBENCH_DB"])


def registry(client: MlflowClient) -> list[tuple[str, tuple[str, ...], str]]:
    """Every version of the model with its aliases (as the registered model lists them) and status."""
    aliases = client.get_registered_model(MODEL).aliases
    versions = client.search_model_versions(f"name='{MODEL}'")
    return sorted((v.version, tuple(sorted(a for a, version in aliases.items() if str(version) == str(v.version))), v.status) for v in versions)


def heartbeats(services, flow_run_id) -> int:
    body = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}, "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}}
    request = urllib.request.Request(f"{services.prefect_api}/events/filter", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Basic " + base64.b64encode(services.credentials()["PREFECT_AUTH_STRING"].encode()).decode()})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["total"]


def test_a_killed_worker_crashes_its_run_and_a_new_worker_runs_the_next(services, tmp_path, monkeypatch):
    sourced = services.sourced_env()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, sourced[key])
    client = MlflowClient(tracking_uri=services.mlflow_uri)
    before = registry(client)
    # A search long enough to be running when its worker goes.
    long = small_config(tmp_path / "killed", detectors=["knn", "lof", "copod"], n_trials=400, pruning=False)
    with temporary_settings({PREFECT_API_URL: services.prefect_api, PREFECT_API_AUTH_STRING: sourced["PREFECT_API_AUTH_STRING"]}):
        with get_client(sync_client=True) as prefect:
            doomed = run_deployment("training/training", parameters={"config": long.model_dump(mode="json")}, timeout=0)
            wait_until(lambda: prefect.read_flow_run(doomed.id).state.is_running() and heartbeats(services, doomed.id), 300,
                       "the flow run running and beating", poll=2)
            old_worker = services.pid("worker")
            lost = [psutil.Process(old_worker), *psutil.Process(old_worker).children(recursive=True)]
            assert len(lost) > 1  # the worker and its flow run's process
            for process in lost:  # all at once, without warning: a lost machine
                process.kill()
            crashed = wait_until(lambda: (state := prefect.read_flow_run(doomed.id).state).is_crashed() and state, 240,
                                 "the silent run marked crashed", poll=2)
            assert "no heartbeat" in crashed.message
            assert registry(client) == before  # nothing registered, no alias moved
            assert not (tmp_path / "killed" / "reports" / "registration.json").exists()

            restarted = services.run("up")
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            assert services.pid("worker") != old_worker
            # The next scheduled run goes to the new worker.
            scheduled = datetime.now(timezone.utc) + timedelta(seconds=5)
            following = run_deployment("training/training", parameters={"config": small_config(tmp_path / "next").model_dump(mode="json")},
                                       scheduled_time=scheduled, timeout=600, poll_interval=2)
    assert following.state.is_completed(), following.state.message
    after = registry(client)
    assert len(after) == len(before) + 1
    newest, _, status = max(after, key=lambda version: int(version[0]))
    assert status == "READY" and client.get_model_version_by_alias(MODEL, "challenger").version == newest


def test_scoring_rides_out_an_mlflow_restart(services, tmp_path, monkeypatch):
    sourced = services.sourced_env()
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, sourced[key])
    config = small_config(tmp_path)
    config = config.model_copy(update={"monitoring": config.monitoring.model_copy(update={"scored_dir": str(tmp_path / "scored")})})
    rows = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns=["malignant"])
    rows.to_csv(tmp_path / "batch.csv", index=False)
    client = MlflowClient(tracking_uri=services.mlflow_uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment).experiment_id
    scoring_runs = "tags.`pynomaly.stage` = 'scoring'"
    assert not client.search_runs([experiment], scoring_runs)

    # MLflow goes down as the flow starts and comes back a little later.
    old = services.pid("mlflow")
    os.killpg(old, signal.SIGTERM)
    wait_until(lambda: not alive(old), 60, "MLflow stopped", poll=2)
    restart = threading.Timer(10, services.run, args=("up",))
    restart.start()
    with temporary_settings({PREFECT_API_URL: services.prefect_api, PREFECT_API_AUTH_STRING: sourced["PREFECT_API_AUTH_STRING"]}):
        state = scoring_flow(str(tmp_path / "batch.csv"), config, return_state=True)
    restart.join()
    assert services.pid("mlflow") != old
    assert state.is_completed(), state.message
    result = state.result()
    scored = pd.read_parquet(result.output)
    assert result.n_rows == len(rows) == len(scored) and result.n_rejected == 0  # every row, once
    expected = mlflow.pyfunc.load_model(result.model_uri).predict(rows[list(config.data.columns)])
    np.testing.assert_allclose(scored["score"], expected["score"], rtol=0, atol=1e-9)
    runs = client.search_runs([experiment], scoring_runs)
    assert [run.info.run_id for run in runs] == [result.run_id]  # one run, not one per attempt
    assert runs[0].data.metrics["n_rows"] == len(rows)


def test_down_stops_what_up_started_and_nothing_else(services):
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    pids = {name: services.pid(name) for name in ("workbench", "worker", "prefect", "mlflow")}
    try:
        result = services.run("down", timeout=120)
        assert result.returncode == 0, result.stderr
        stopped = [line.split()[1] for line in result.stdout.splitlines() if line.endswith(" stopped")]
        assert stopped == ["workbench", "worker", "prefect", "mlflow"]  # workers first: they hang once their server is gone
        assert not [name for name, pid in pids.items() if alive(pid)], result.stdout
        assert bystander.poll() is None
        assert "stopped" in services.run("status").stdout
    finally:
        bystander.send_signal(signal.SIGTERM)
        bystander.wait()
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as connection:  # PostgreSQL is not ours to stop
        assert connection.execute("SELECT 1").fetchone() == (1,)
