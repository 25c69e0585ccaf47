"""Workbench speed: the review page of a 100k-row batch, and the scoring API's latency beside
`mlflow models serve` on the same model, both under the same bounded load on loopback.

    python benchmarks/workbench.py data/raw [--rows 100000] [--connections 2] [--requests 50] [--batch-rows 10]

DATA_DIR holds breast_cancer.csv. In a scratch folder it trains the demo detector (IForest),
scores a batch of --rows rows drawn from the table with a little noise, starts `pynomaly ui` and
`pynomaly serve` on free ports, then prints:
- the review page's time (first request, which loads the model and the batch, then warm pages),
  and of the SHAP fragment the page fetches after it has rendered;
- p50/p99 latency and throughput of --connections closed-loop clients, each sending --requests
  requests of --batch-rows rows, to POST /api/v1/score and to MLflow's POST /invocations.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess  # nosec B404: starts the project's own CLI
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], cwd: Path, health: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen([sys.executable, "-m", "pynomaly_core.cli", *args], cwd=cwd, env=env,  # nosec B603: our own CLI
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(240):
        try:
            urllib.request.urlopen(health, timeout=2)  # nosec B310: an http://127.0.0.1 URL built here
            return process
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{' '.join(args)} did not answer {health}")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    process.wait(timeout=30)


def prepare(data_dir: Path, folder: Path, n_rows: int, train: dict | None = None):
    """Train and register a model in `folder` (configs/demo.yaml's, its train settings updated by `train`) and score an
    n_rows batch there: (batch id, config, sample rows)."""
    from pynomaly_core.monitoring import monitor as monitoring
    from pynomaly_core import stages
    from pynomaly_core.config import load_config

    shutil.copytree(data_dir, folder / "data" / "raw")
    os.chdir(folder)
    config = load_config(ROOT / "configs" / "demo.yaml")
    config = config.model_copy(update={"train": config.train.model_copy(update={"progress_bar": False, **(train or {})})})
    (folder / "configs").mkdir()
    (folder / "configs" / "demo.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    for name in ("validate", "preprocess", "train", "evaluate", "register"):
        stages.STAGES[name](config)
    table = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns="malignant")
    rng = np.random.default_rng(0)
    batch = table.sample(n_rows, replace=True, random_state=0).reset_index(drop=True)
    features = list(config.data.columns)
    batch[features] = batch[features] * rng.normal(1, 0.02, size=(n_rows, len(features))).clip(0.9, 1.1)
    batch["sample_id"] = np.arange(n_rows)
    batch.to_csv(folder / "big.csv", index=False)
    monitoring.score_batch(config, "big.csv")
    return "big", config, table.head(1000)


def log_in(url: str, name: str, password: str) -> urllib.request.OpenerDirector:
    import http.cookiejar

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    token = re.search(r'name="csrf_token" value="([^"]+)"', opener.open(f"{url}/login").read().decode()).group(1)
    opener.open(f"{url}/login", urllib.parse.urlencode({"name": name, "password": password, "csrf_token": token}).encode())
    return opener


def timed(opener, url: str) -> float:
    started = time.perf_counter()
    response = opener.open(url)
    response.read()
    if response.status != 200:
        sys.exit(f"review page answered {response.status}")
    return time.perf_counter() - started


def load(port: int, path: str, body: bytes, headers: dict, connections: int, requests: int) -> dict:
    """`connections` clients, each sending `requests` requests one after another on one keep-alive connection."""
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for _ in range(requests):
            started = time.perf_counter()
            connection.request("POST", path, body, {"Content-Type": "application/json", **headers})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                failures.append(response.status)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"p50_ms": np.percentile(ms, 50), "p99_ms": np.percentile(ms, 99), "requests_per_s": len(ms) / wall, "failed": len(failures)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--batch-rows", type=int, default=10)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    password = "benchmark password"  # nosec B105: a throw-away user in a temporary database

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        batch_id, config, table = prepare(data_dir, folder, args.rows, train={"strategy": "consensus", "detectors": ["iforest"], "n_trials": 2, "cv_folds": 2})
        from workbench import auth
        from workbench.db import connect, migrate
        from pynomaly_core.labels.feedback import database_url

        url_db = database_url(config)
        migrate(url_db)
        with connect(url_db).begin() as connection:
            auth.add_user(connection, "bench", password, "admin")
            key = auth.create_api_key(connection, config.registry.model_name, "bench")

        ui_port, serve_port = free_port(), free_port()
        ui = start(["ui", "--port", str(ui_port)], folder, f"http://127.0.0.1:{ui_port}/healthz")
        serve = start(["serve", "--port", str(serve_port)], folder, f"http://127.0.0.1:{serve_port}/ping")
        try:
            base = f"http://127.0.0.1:{ui_port}"
            opener = log_in(base, "bench", password)
            review = f"{base}/review?batch={batch_id}"
            first = timed(opener, review)
            pages = [timed(opener, f"{review}&page={page}") for page in range(1, 21)]
            shap_first = timed(opener, f"{base}/review/shap?batch={batch_id}&page=2")
            shap = [timed(opener, f"{base}/review/shap?batch={batch_id}&page={page}") for page in range(3, 8)]
            print(f"review page of a {args.rows}-row batch: first request {first:.3f} s (loads the model and the batch), "
                  f"warm pages median {np.median(pages):.3f} s, max {max(pages):.3f} s over 20 pages")
            print(f"SHAP fragment of a page (25 rows, fetched after the page renders): first {shap_first:.3f} s, median {np.median(shap):.3f} s")

            rows = table.sample(args.batch_rows, random_state=1).to_dict("records")
            results = {
                "pynomaly ui  POST /api/v1/score": load(ui_port, "/api/v1/score", json.dumps({"rows": rows}).encode(), {"X-API-Key": key},
                                                        args.connections, args.requests),
                "mlflow serve POST /invocations ": load(serve_port, "/invocations", json.dumps({"dataframe_records": rows}).encode(), {},
                                                        args.connections, args.requests),
            }
            print(f"\nscoring latency, {args.connections} clients x {args.requests} requests of {args.batch_rows} rows, loopback:")
            for name, r in results.items():
                print(f"  {name}  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  {r['requests_per_s']:6.1f} req/s  failed {r['failed']}")
        finally:
            stop(ui)
            stop(serve)


if __name__ == "__main__":
    main()
