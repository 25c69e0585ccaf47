"""Start and stop the local production services (infra/local/services.sh) for tests.

Each test session gets free ports, its own state folder and its own PostgreSQL databases
(dropped first), so it never touches a developer's running services or their data.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.conftest import ROOT

SCRIPT = ROOT / "infra" / "local" / "services.sh"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def http_status(url: str, method: str = "GET", body: dict | None = None, auth: str | None = None) -> int:
    """The HTTP status of one JSON request, with basic auth `user:password` when given; 0 when nothing answers."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, seconds: float, what: str, poll: float = 0.2):
    """Poll `condition` until it returns a true value, which is returned; AssertionError naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(poll)
    return value


def drop_databases(*names: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        for name in names:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Services:
    env: dict[str, str]
    state: Path

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.env['MLFLOW_PORT']}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.env['PREFECT_PORT']}/api"

    @property
    def optuna_storage(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.env['OPTUNA_DB']}"

    def databases(self) -> list[str]:
        return [self.env[key] for key in ("MLFLOW_DB", "PREFECT_DB", "OPTUNA_DB", "WORKBENCH_DB")]

    def run(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), *args], env={**self.env, **env}, capture_output=True, text=True, timeout=timeout
        )

    def pid(self, name: str) -> int:
        return int((self.state / f"{name}.pid").read_text())

    def credentials(self) -> dict[str, str]:
        """The credentials file `up` wrote (KEY=value lines)."""
        lines = (self.state / "credentials").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))

    def sourced_env(self) -> dict[str, str]:
        """What `source .services/env` exports to a command."""
        shown = subprocess.run(["bash", "-c", f". {self.state}/env && env -0"], capture_output=True, text=True, check=True, env=self.env)
        return dict(item.split("=", 1) for item in shown.stdout.split("\0") if "=" in item)


def make_services(state: Path) -> Services:
    prefix = f"pynomaly_test_{os.getpid()}"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "PYNOMALY_SERVICES_DIR": str(state),
        "MLFLOW_PORT": str(free_port()),
        "PREFECT_PORT": str(free_port()),
        "MLFLOW_DB": f"{prefix}_mlflow",
        "PREFECT_DB": f"{prefix}_prefect",
        "OPTUNA_DB": f"{prefix}_optuna",
        "WORKBENCH_DB": f"{prefix}_workbench",
        "WORKBENCH_PORT": str(free_port()),
        "PREFECT_WORK_POOL": "pynomaly-test",
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # pick up triggered runs quickly
    }
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_URL",
                "PREFECT_API_AUTH_STRING", "PREFECT_HOME", "PYNOMALY_OPTUNA_STORAGE", "PYNOMALY_CREDENTIALS", "PYNOMALY_DB_URL"):
        env.pop(key, None)
    return Services(env, state)


class TcpProxy:
    """Forward a local port to PostgreSQL; `stop()` is the database going away mid-run."""

    def __init__(self, port: int, target: tuple[str, int] = ("127.0.0.1", 5432)):
        self.port, self.target = port, target
        self._sockets: list[socket.socket] = []

    def start(self) -> TcpProxy:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._sockets = [listener]
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets = []


@contextlib.contextmanager
def serving(cwd: Path, command: str = "serve", health: str = "/ping", options: tuple[str, ...] = ()):
    """`pynomaly serve` of the champion registered in `cwd` (or another `pynomaly` server command, answering
    `health` when up, with more `options`), on a free port: yields its URL, then stops it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}  # the venv's bin is added by `serve`
    env.pop("MLFLOW_TRACKING_URI", None)
    log = Path(cwd) / f"{command}-{port}.log"  # a file, not a pipe: a server that logs much never blocks on it
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "pynomaly_core.cli", command, "--port", str(port), *options],
            cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if process.poll() is not None:
                raise RuntimeError(f"pynomaly {command} exited: {log.read_text()}")
            try:
                if urllib.request.urlopen(f"{url}{health}", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError(f"pynomaly {command} did not answer {health} in 120 s")
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)


def fuzz_serve(url: str, examples: int, folder: Path) -> dict:
    """schemathesis on every operation of docs/serve-openapi.yaml against `pynomaly serve` at `url`; the check: no 5xx answer."""
    report = folder / "fuzz.ndjson"
    result = subprocess.run([str(Path(sys.executable).parent / "schemathesis"), "run", str(ROOT / "docs" / "serve-openapi.yaml"), "--url", url,  # nosec B603
                             "--checks", "not_a_server_error", "--max-examples", str(examples), "--seed", "1",
                             "--report", "ndjson", "--report-ndjson-path", str(report), "--no-color"],
                            capture_output=True, text=True)
    server_errors = sum(interaction["response"].get("status_code", 0) >= 500
                        for line in report.read_text().splitlines() for interaction in _interactions(json.loads(line)))
    generated = re.search(r"(\d+) generated", result.stdout)
    return {"cases": int(generated.group(1)) if generated else 0, "server_errors": server_errors, "passed": result.returncode == 0,
            "summary": result.stdout.strip().splitlines()[-8:]}


def _interactions(event: dict):
    """The recorded request/response pairs in one schemathesis NDJSON event."""
    if isinstance(event, dict):
        if "request" in event and isinstance(event.get("response"), dict):
            yield event
            return
        for value in event.values():
            yield from _interactions(value)
    elif isinstance(event, list):
        for value in event:
            yield from _interactions(value)
