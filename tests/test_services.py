"""The production path against real servers: infra/local/services.sh starts PostgreSQL-backed
MLflow and Prefect servers and a process worker; the training deployment runs on that worker."""

import signal
import socket
import subprocess
from pathlib import Path

import optuna
import psycopg
import pytest
from mlflow import MlflowClient
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import deploy
from tests.conftest import ROOT, demo_config
from tests.services import drop_databases, make_services

MODEL = "breast-cancer-detector"


@pytest.fixture(scope="module")
def services(tmp_path_factory, postgres_url):
    services = make_services(tmp_path_factory.mktemp("services"))
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
    config = demo_config(detectors=["iforest", "hbos", "copod"], n_trials=3, **train)
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


def test_servers_are_healthy_and_keep_their_state_in_postgres(services):
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


def test_deployed_training_runs_on_the_worker_and_registers_on_the_server(services, tmp_path):
    with temporary_settings({PREFECT_API_URL: services.prefect_api}):
        deploy.deploy("configs/demo.yaml", services.env["PREFECT_WORK_POOL"])
        config = small_config(tmp_path)
        # What the UI's "Run" button does: a flow run of the deployment, picked up by the worker.
        flow_run = run_deployment("training/training", parameters={"config": config.model_dump(mode="json")}, timeout=600, poll_interval=2)
        from prefect.client.orchestration import get_client

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
