"""The containers' credentials: infra/with-credentials.sh hands each role its part of the secret
file, and the compose and Kubernetes manifests mount each container only its role's part of that
file instead of holding literals; the init SQL creates every database the services use."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.services import free_port, http_status

WRAPPER = ROOT / "infra" / "with-credentials.sh"


@pytest.fixture
def credentials(tmp_path) -> Path:
    path = tmp_path / "credentials"
    subprocess.run(["bash", str(ROOT / "infra" / "local" / "services.sh"), "credentials"], check=True, capture_output=True,
                   env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYNOMALY_CREDENTIALS": str(path)})
    return path


def values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def wrapped(credentials: Path, role: str, *command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(WRAPPER), role, *command], capture_output=True, text=True, timeout=120,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYNOMALY_CREDENTIALS": str(credentials), **env})


def test_each_role_gets_only_its_credentials(credentials):
    secret = values(credentials)
    client = dict(line.split("=", 1) for line in wrapped(credentials, "client", "env").stdout.splitlines() if "=" in line)
    assert (client["MLFLOW_TRACKING_USERNAME"], client["MLFLOW_TRACKING_PASSWORD"]) == ("pipeline", secret["MLFLOW_PIPELINE_PASSWORD"])
    assert client["PREFECT_API_AUTH_STRING"] == secret["PREFECT_AUTH_STRING"]
    assert secret["MLFLOW_ADMIN_PASSWORD"] not in str(client)
    workbench = dict(line.split("=", 1) for line in wrapped(credentials, "workbench", "env").stdout.splitlines() if "=" in line)
    assert (workbench["MLFLOW_TRACKING_USERNAME"], workbench["MLFLOW_TRACKING_PASSWORD"]) == ("reader", secret["MLFLOW_READER_PASSWORD"])
    assert workbench["PREFECT_API_AUTH_STRING"] == secret["PREFECT_AUTH_STRING"]  # it triggers the training deployment
    assert secret["MLFLOW_PIPELINE_PASSWORD"] not in str(workbench)
    prefect = wrapped(credentials, "prefect-server", "env").stdout
    assert f"PREFECT_SERVER_API_AUTH_STRING={secret['PREFECT_AUTH_STRING']}" in prefect and "MLFLOW_TRACKING" not in prefect
    missing = wrapped(credentials.parent / "absent", "client", "env")
    assert missing.returncode == 1 and "cannot read the credentials file" in missing.stderr


def test_each_role_is_mounted_only_its_part_of_the_credentials(credentials):
    secret, parts = values(credentials), credentials.parent / "credentials.d"
    users = {"MLFLOW_PIPELINE_USERNAME", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_READER_USERNAME", "MLFLOW_READER_PASSWORD"}
    expected = {"mlflow-server": {"MLFLOW_ADMIN_USERNAME", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_PIPELINE_USERNAME"},
                "mlflow-users": {"MLFLOW_ADMIN_USERNAME", "MLFLOW_ADMIN_PASSWORD"} | users,
                "prefect-server": {"PREFECT_AUTH_STRING"},
                "client": {"MLFLOW_PIPELINE_USERNAME", "MLFLOW_PIPELINE_PASSWORD", "PREFECT_AUTH_STRING"},
                "workbench": {"MLFLOW_READER_USERNAME", "MLFLOW_READER_PASSWORD", "PREFECT_AUTH_STRING"}}
    assert {p.name: set(values(p)) for p in parts.iterdir()} == expected
    for role in expected:
        part = parts / role
        assert values(part) == {key: secret[key] for key in expected[role]} and oct(part.stat().st_mode & 0o777) == "0o600"
    for role in ("client", "workbench", "prefect-server"):  # the part alone gives the role what the whole file does
        given = [wrapped(path, role, "env").stdout.replace(str(path), "FILE") for path in (parts / role, credentials)]
        assert given[0] == given[1] and secret["PREFECT_AUTH_STRING"] in given[0]


def test_container_roles_start_an_authenticated_mlflow_and_create_its_users(credentials, tmp_path):
    secret, port = values(credentials), free_port()
    url = f"http://127.0.0.1:{port}"
    parts = credentials.parent / "credentials.d"  # each role runs on its part alone, as mounted
    server = subprocess.Popen(
        ["sh", str(WRAPPER), "mlflow-server", "mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri",
         f"sqlite:///{tmp_path}/mlflow.db", "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1",
         "--host", "127.0.0.1", "--port", str(port)],
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYNOMALY_CREDENTIALS": str(parts / "mlflow-server"),
             "PYTHONPATH": str(ROOT),  # the image installs the package; here, this checkout's (its authorization function)
             "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path}/users.db", "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(120):
            if http_status(f"{url}/health") == 200:
                break
            assert server.poll() is None, "the MLflow server exited"
            time.sleep(1)
        for _ in range(2):  # the job may run again: existing users are kept
            created = wrapped(parts / "mlflow-users", "mlflow-users", MLFLOW_TRACKING_URI=url)
            assert created.returncode == 0, created.stderr
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert http_status(search) == 401
        assert http_status(search, auth=f"reader:{secret['MLFLOW_READER_PASSWORD']}") == 200
        assert http_status(search, auth=f"pipeline:{secret['MLFLOW_PIPELINE_PASSWORD']}") == 200
        assert http_status(search, auth=f"admin:{secret['MLFLOW_ADMIN_PASSWORD']}") == 200
        create = f"{url}/api/2.0/mlflow/registered-models/create"  # issue 27, 3: only the pipeline (and admin) may create
        assert http_status(create, "POST", {"name": "wine-detector"}, auth=f"reader:{secret['MLFLOW_READER_PASSWORD']}") == 403
        assert http_status(create, "POST", {"name": "wine-detector"}, auth=f"pipeline:{secret['MLFLOW_PIPELINE_PASSWORD']}") == 200
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_compose_mounts_each_service_its_roles_part_of_the_credentials():
    compose = yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text())
    roles = {"mlflow": "mlflow-server", "mlflow-users": "mlflow-users", "prefect-server": "prefect-server",
             "prefect-worker": "client", "dask-worker": "client", "workbench": "workbench"}
    assert compose["secrets"] == {role: {"file": f"${{PYNOMALY_CREDENTIALS:-../.services/credentials}}.d/{role}"} for role in roles.values()}
    for name, service in compose["services"].items():
        role = roles.get(name)
        assert service.get("secrets") == ([{"source": role, "target": "credentials"}] if role else None), name
        if role:
            assert service["command"].startswith(f"with-credentials {role}"), name
    assert "--app-name basic-auth" in compose["services"]["mlflow"]["command"]


def test_no_container_command_holds_the_database_password_and_the_prefect_ui_calls_its_own_server():
    """Issue 27, 1 and 2: a command line is visible to every process (`ps`); the UI's api_url is where the browser sends
    the auth string, so it is the server's published address, not Prefect's default port."""
    compose = yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text())["services"]
    for name, service in compose.items():
        assert "PASSWORD" not in str(service.get("command", "")), name
    prefect = compose["prefect-server"]
    published = prefect["ports"][0].removeprefix("127.0.0.1:").rsplit(":", 1)[0]  # ${PREFECT_PORT:-4205}
    assert prefect["environment"]["PREFECT_UI_API_URL"] == f"http://127.0.0.1:{published}/api"
    assert compose["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    k8s = ROOT / "infra" / "k8s" / "base"
    documents = [d for path in sorted(k8s.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    for document in documents:
        pod = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            assert "PASSWORD" not in " ".join(container.get("command", []) + container.get("args", [])), document["metadata"]["name"]
    server = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "prefect-server")
    environment = {e["name"]: e.get("value") for e in server["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert environment["PREFECT_UI_API_URL"].endswith("/api") and ":4200/" not in environment["PREFECT_UI_API_URL"]


INIT_SQL = ROOT / "infra" / "postgres" / "init.sql"


def created(sql: str) -> set[str]:
    return set(re.findall(r"'(\w+)'", re.search(r"ARRAY\[([^\]]*)\]", sql).group(1)))


def test_every_database_the_services_connect_to_is_created_before_they_start():
    """Compose runs the init SQL in a one-shot service the servers wait for, Kubernetes in an init container of each
    server that uses PostgreSQL: at every start, not from PostgreSQL's entrypoint, which runs on an empty volume only."""
    def connected(*paths: Path) -> set[str]:
        return {name for path in paths for name in re.findall(r"@postgres:5432/(\w+)", path.read_text())}

    k8s = ROOT / "infra" / "k8s" / "base"
    documents = [d for path in sorted(k8s.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text())]
    init_map = next(d for d in documents if d.get("metadata", {}).get("name") == "postgres-init")
    assert init_map["data"]["init.sql"] == INIT_SQL.read_text()
    compose_path = ROOT / "infra" / "compose.yaml"
    assert "workbench" in connected(compose_path) & connected(*k8s.glob("*.yaml"))
    assert connected(compose_path) | connected(*k8s.glob("*.yaml")) <= created(INIT_SQL.read_text())

    services = yaml.safe_load(compose_path.read_text())["services"]
    assert services["postgres-databases"]["volumes"] == ["./postgres/init.sql:/init.sql:ro"]
    for server in ("mlflow", "prefect-server"):  # the rest start after these
        assert services[server]["depends_on"] == {"postgres-databases": {"condition": "service_completed_successfully"}}
    assert [name for name, service in services.items() if "postgres" in service.get("depends_on", {})] == ["postgres-databases"]
    assert "docker-entrypoint-initdb.d" not in compose_path.read_text()
    servers = {"mlflow", "prefect-server", "workbench"}  # the workers use a database (Optuna's) only once these serve
    for document in documents:
        if document["kind"] == "Deployment" and document["metadata"]["name"] in servers:
            servers.remove(document["metadata"]["name"])
            pod = document["spec"]["template"]["spec"]
            (init,) = pod["initContainers"]
            assert init["command"][-1] == "/init/init.sql" and {"name": "init", "configMap": {"name": "postgres-init"}} in pod["volumes"]
    assert not servers


def test_the_init_sql_creates_what_is_missing_and_can_run_again(postgres_url):
    """Run as psql runs it in the containers, twice, against the local PostgreSQL (with this test's own database names):
    the first run creates every database, the second, on the same server, succeeds and changes nothing."""
    from tests.services import drop_databases

    names = {name: f"pynomaly_init_{name}_{os.getpid()}" for name in created(INIT_SQL.read_text())}
    sql = INIT_SQL.read_text()
    for name, scratch in names.items():
        sql = sql.replace(f"'{name}'", f"'{scratch}'")
    drop_databases(*names.values())
    try:
        for _ in range(2):
            done = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-v", "ON_ERROR_STOP=1"],
                                  input=sql, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        listed = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-Atc", "SELECT datname FROM pg_database"],
                                capture_output=True, text=True, check=True).stdout.split()
        assert set(names.values()) <= set(listed)
    finally:
        drop_databases(*names.values())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
def test_kubernetes_pods_mount_the_credentials_secret(tmp_path):
    shutil.copytree(ROOT / "infra" / "k8s", tmp_path / "k8s")
    overlay = tmp_path / "k8s" / "overlays" / "local"
    (overlay / "secrets.env").write_text("POSTGRES_PASSWORD=only-for-this-test\n")
    (overlay / "credentials.d").mkdir()
    for role in ("mlflow-server", "mlflow-users", "prefect-server", "client", "workbench"):
        (overlay / "credentials.d" / role).write_text("MLFLOW_ADMIN_PASSWORD=only-for-this-test\n")
    rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    generated = [d["metadata"]["name"] for d in documents if d["kind"] == "Secret"]
    assert sorted(name.rsplit("-", 1)[0] for name in generated) == ["pynomaly-credentials", "pynomaly-secrets"]
    parts = next(d for d in documents if d["kind"] == "Secret" and d["metadata"]["name"].startswith("pynomaly-credentials-"))
    assert sorted(parts["data"]) == ["client", "mlflow-server", "mlflow-users", "prefect-server", "workbench"]  # one key per role
    wrapped_roles = {}
    for document in documents:
        pod = document.get("spec", {}).get("template", {}).get("spec")
        if not pod or document["metadata"]["name"] in ("postgres", "dask-scheduler"):
            continue
        secret_volumes = [v["secret"] for v in pod.get("volumes", []) if "secret" in v]
        assert secret_volumes and secret_volumes[0]["secretName"].startswith("pynomaly-credentials-"), document["metadata"]["name"]
        container = pod["containers"][0]
        assert {"name": "credentials", "mountPath": "/run/secrets", "readOnly": True} in container["volumeMounts"]
        wrapped_roles[document["metadata"]["name"]] = container["command"][:2]
        # Only the container's role's part, at the path with-credentials reads.
        assert secret_volumes[0]["items"] == [{"key": container["command"][1], "path": "credentials"}], document["metadata"]["name"]
    assert wrapped_roles == {"mlflow": ["with-credentials", "mlflow-server"], "mlflow-users": ["with-credentials", "mlflow-users"],
                             "prefect-server": ["with-credentials", "prefect-server"], "prefect-worker": ["with-credentials", "client"],
                             "dask-worker": ["with-credentials", "client"], "workbench": ["with-credentials", "workbench"]}
