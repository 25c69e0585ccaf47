"""A real user's login while a flood of failed logins runs (issue 27, 6), on the default SQLite database.

    python benchmarks/login_flood.py [--flood 60] [--rounds 3]

In a scratch folder it starts `pynomaly ui` (uvicorn, SQLite in mlflow/workbench.db) on a free port with one user,
then, side by side in one run, times the user's POST /login (the argon2 check included; the GET of the form is not
timed):
- alone, --rounds times, on a new device (no device cookie) and on its own device (the device cookie of its
  previous login, kept as a browser keeps it);
- during a flood of --flood concurrent logins with random names and wrong passwords, all from one address (the
  per-client limit stops all but the first MAX_FAILED_LOGINS_PER_CLIENT before their password check);
- during a flood of as many logins, each from its own loopback address (127.0.R.i: no per-client limit applies,
  every one costs an argon2 check), once on a new device (it waits behind the flood's checks) and once on its own
  device (its login has threads and argon2 slots of its own).
The user logs in from an address of its own, 0.2 s after the flood starts. It prints the flood's answers by status
(a 500 is a failure of the fix) and the user's login times: median and worst per case, and the ratio to alone.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.workbench import free_port, start  # noqa: E402  the same server start as the workbench benchmark

PASSWORD = "benchmark password"  # nosec B105: a throw-away user in a temporary database


def login(port: int, name: str, password: str, source: str, device: str = "") -> tuple[int, float, str]:
    """POST /login from `source` (a loopback address) after fetching the form, with the device cookie `device` if
    any; its status, seconds and the device cookie it sets ("" when none)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300, source_address=(source, 0))
    device_cookie = f"; pynomaly_device={device}" if device else ""
    try:
        connection.request("GET", "/login")
        form = connection.getresponse()
        page = form.read().decode()
        cookie = re.search(r"pynomaly_login_csrf=([^;]+)", form.getheader("set-cookie")).group(1)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        started = time.perf_counter()
        connection.request("POST", "/login", body=urlencode({"name": name, "password": password, "csrf_token": token}),
                           headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"pynomaly_login_csrf={cookie}{device_cookie}"})
        answer = connection.getresponse()
        answer.read()
        seconds = time.perf_counter() - started
        issued = re.search(r"pynomaly_device=([^;]+)", ", ".join(answer.headers.get_all("set-cookie") or []))
        return answer.status, seconds, issued.group(1) if issued else ""
    finally:
        connection.close()


def flood_round(port: int, size: int, sources: list[str], user_source: str, device: str = "") -> tuple[Counter, float]:
    """`size` failed logins at once from `sources` (cycled), and the user's login 0.2 s in, with the device cookie
    `device` if any."""
    together, statuses = threading.Barrier(size + 1), Counter()

    def attempt(i: int):
        together.wait()
        try:
            statuses[login(port, f"nobody-{secrets.token_hex(6)}", "wrong password", sources[i % len(sources)])[0]] += 1
        except OSError as err:
            statuses[type(err).__name__] += 1

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(size)]
    for thread in threads:
        thread.start()
    together.wait()
    time.sleep(0.2)
    status, seconds, _ = login(port, "bench", PASSWORD, user_source, device)
    if status != 303:
        raise RuntimeError(f"the user's login answered {status}")
    for thread in threads:
        thread.join()
    return statuses, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.pop("PYNOMALY_DB_URL", None)
    from workbench import auth
    from workbench.db import connect, migrate

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "configs").mkdir()
        shutil.copy(ROOT / "configs" / "demo.yaml", folder / "configs" / "demo.yaml")
        url = f"sqlite:///{folder}/mlflow/workbench.db"  # where the server, run in `folder`, finds the config's default
        migrate(url)
        with connect(url).begin() as connection:
            auth.add_user(connection, "bench", PASSWORD, "viewer")
        port = free_port()
        server = start(["ui", "--port", str(port)], folder, f"http://127.0.0.1:{port}/healthz")
        try:
            cases = ["alone", "alone, own device", "one address", "many addresses", "many addresses, own device"]
            times: dict[str, list[float]] = {case: [] for case in cases}
            answers: dict[str, Counter] = {case: Counter() for case in cases[2:]}
            device = login(port, "bench", PASSWORD, "127.0.250.4")[2]  # the user's own device: it logged in there before
            for round_ in range(args.rounds):
                times["alone"].append(login(port, "bench", PASSWORD, "127.0.250.1")[1])
                times["alone, own device"].append(login(port, "bench", PASSWORD, "127.0.250.4", device)[1])
                floods = {"one address": ([f"127.0.{100 + round_}.1"], "127.0.250.2", ""),
                          "many addresses": ([f"127.0.{round_}.{i + 1}" for i in range(args.flood)], "127.0.250.3", ""),
                          "many addresses, own device": ([f"127.0.{50 + round_}.{i + 1}" for i in range(args.flood)], "127.0.250.4", device)}
                for case, (sources, user_source, cookie) in floods.items():
                    statuses, seconds = flood_round(port, args.flood, sources, user_source, cookie)
                    answers[case] += statuses
                    times[case].append(seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"flood of {args.flood} concurrent failed logins, {args.rounds} rounds; per-client limit {auth.MAX_FAILED_LOGINS_PER_CLIENT}")
    for case, counted in answers.items():
        print(f"  flood from {case}: answers {dict(sorted(counted.items(), key=str))}")
    alone = statistics.median(times["alone"])
    print("the user's login (POST /login), seconds:")
    for case, seconds in times.items():
        print(f"  {case:27s} median {statistics.median(seconds):.3f}  worst {max(seconds):.3f}  "
              f"median / alone {statistics.median(seconds) / alone:.1f}")


if __name__ == "__main__":
    main()
