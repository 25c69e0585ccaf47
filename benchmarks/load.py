"""Load, soak and fuzz `pynomaly serve` on loopback.

Trains the demo detector (one isolation-forest trial) in a temporary project, serves its champion
with `pynomaly serve`, then:
1. load: wrk at each of --connections for --seconds, one row per request (30 s timeout) -> requests/s, p50, p99,
   errors (socket errors and non-2xx answers), and the server's CPU time per request;
2. soak: one keep-alive client at a steady --rate for --soak-seconds -> latency, errors, and the
   resident memory of the server's processes before and after;
3. fuzz: schemathesis against docs/serve-openapi.yaml -> cases run, 5xx answers.
Every loop is bounded in time or count, and every request goes to 127.0.0.1.

Run:  .venv/bin/python benchmarks/load.py [--connections 1 8 32] [--seconds 30] [--rate 50]
          [--soak-seconds 600] [--fuzz-examples 200] [--out load.json]
Needs wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from stream import train_demo  # benchmarks/stream.py: the demo champion in a temporary project

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.services import fuzz_serve, serving  # noqa: E402  (pynomaly serve on a free port; schemathesis)

UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def one_row_body() -> str:
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns=["sample_id", "malignant"])
    return json.dumps({"dataframe_split": frame.head(1).to_dict(orient="split")})


def server_processes(port: int) -> list[psutil.Process]:
    """Every process in the session of the one listening on `port` (mlflow, uvicorn and its workers)."""
    pid = next(c.pid for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == psutil.CONN_LISTEN)
    session = os.getsid(pid)
    processes = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getsid(process.pid) == session:
                processes.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return processes


def _sum(port: int, measure) -> float:
    total = 0.0
    for process in server_processes(port):
        try:
            total += measure(process)
        except psutil.NoSuchProcess:
            pass
    return total


def server_rss_mib(port: int) -> float:
    return _sum(port, lambda process: process.memory_info().rss) / 2**20


def server_cpu_seconds(port: int) -> float:
    """CPU time (user + system) of the server's processes: per request, it barely moves with other load on the machine."""
    return _sum(port, lambda process: sum(process.cpu_times()[:2]))


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * UNITS_MS[unit]


def wrk(url: str, body: str, connections: int, seconds: int, folder: Path) -> dict:
    script = folder / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{body}]==]\n')
    threads = min(connections, os.cpu_count() or 1)
    # Bandit B603/B607: a fixed argv; wrk is the Debian package's, found on PATH.
    run = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s", "--latency", "-s", str(script),  # nosec B603 B607
                          f"{url}/invocations"], capture_output=True, text=True, check=True)
    if run.stderr.strip():  # a script error makes wrk send GETs instead
        raise RuntimeError(f"wrk: {run.stderr.strip()}")
    out = run.stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "connections": connections,
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(percentiles["50"]),
        "p99_ms": _ms(percentiles["99"]),
        "errors": (sum(map(int, socket_errors.groups())) if socket_errors else 0) + (int(non_2xx.group(1)) if non_2xx else 0),
    }


def soak(port: int, body: str, rate: float, seconds: float) -> dict:
    """One keep-alive connection sending a request every 1/rate s for `seconds`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, errors, samples = [], 0, []
    rss_before = server_rss_mib(port)
    started = time.perf_counter()
    next_sample = started
    for i in range(int(rate * seconds)):
        due = started + i / rate
        if time.perf_counter() - started >= seconds:  # a slow server gets fewer requests, not more time
            break
        time.sleep(max(0.0, due - time.perf_counter()))
        sent = time.perf_counter()
        try:
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            errors += response.status != 200
        except OSError:
            errors += 1
            connection.close()
        latencies.append((time.perf_counter() - sent) * 1000)
        if sent >= next_sample:
            samples.append(server_rss_mib(port))
            next_sample += 30
    rss_after = server_rss_mib(port)
    return {
        "rate": rate, "seconds": round(time.perf_counter() - started, 1), "requests": len(latencies), "errors": errors,
        "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
        "rss_before_mib": round(rss_before, 1), "rss_after_mib": round(rss_after, 1), "rss_max_mib": round(max(samples + [rss_after]), 1),
        "rss_growth_pct": round(100 * (rss_after - rss_before) / rss_before, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rate", type=float, default=50.0, help="soak: requests per second")
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--fuzz-examples", type=int, default=200, help="schemathesis --max-examples per operation")
    parser.add_argument("--workers", type=int, default=1, help="pynomaly serve --workers")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/load.py: wrk not found (Debian: apt-get install wrk)")

    folder = Path(tempfile.mkdtemp(prefix="pynomaly-load-"))
    train_demo(folder)
    shutil.copytree(ROOT / "configs", folder / "configs")  # `pynomaly serve` reads the model name there
    body = one_row_body()
    with serving(folder, options=("--workers", str(args.workers))) as url:
        port = int(url.rsplit(":", 1)[1])
        results = {"load": [], "machine": f"{os.cpu_count()} cores, shared", "workers": args.workers}
        for connections in args.connections:
            cpu_before = server_cpu_seconds(port)
            row = wrk(url, body, connections, args.seconds, folder)
            row["server_cpu_ms_per_request"] = round(1000 * (server_cpu_seconds(port) - cpu_before) / max(row["requests"], 1), 2)
            results["load"].append(row)
            print(f"load  {connections:>3} connections: {row['requests_per_s']:8.1f} req/s  p50 {row['p50_ms']:7.2f} ms  "
                  f"p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}  server CPU {row['server_cpu_ms_per_request']:.2f} ms/request", flush=True)
        results["soak"] = row = soak(port, body, args.rate, args.soak_seconds)
        print(f"soak  {row['rate']:.0f} req/s for {row['seconds']} s: {row['requests']} requests, errors {row['errors']}, "
              f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms; RSS {row['rss_before_mib']} -> {row['rss_after_mib']} MiB "
              f"({row['rss_growth_pct']:+.2f} %, max {row['rss_max_mib']})", flush=True)
        results["fuzz"] = row = fuzz_serve(url, args.fuzz_examples, folder)
        print(f"fuzz  {row['cases']} cases, {row['server_errors']} answered 5xx; schemathesis {'passed' if row['passed'] else 'FAILED'}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
