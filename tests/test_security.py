"""The findings of the outside security review (issue 27) that need no trained model: logins under a flood, device
cookies, the per-client limit and an admin's unlock, names and passwords, accounts and keys an admin manages, the
scoring API's body limits, what is read from scored_dir, the headers of every page, messages by code, 500s in /metrics
and the client address behind a proxy. Each test failed on the workbench before the fix."""

from __future__ import annotations

import http.client
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.cookiejar import CookieJar
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pynomaly_core.config import load_config
from pynomaly_core.errors import DataError
from pynomaly_core.labels.feedback import database_url
from tests.conftest import ROOT, write_config
from tests.services import free_port, serving, wait_until
from workbench import auth, catalog
from workbench.app import create_app
from workbench.routers.pages import REPORT_CSP
from workbench.db import AUDIT, SESSIONS, connect, migrate

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A project folder (the current directory) with the demo config, an empty MLflow store, an empty scored_dir and
    two users, ada (admin) and vic (viewer): the workbench without a trained model."""
    root = tmp_path_factory.mktemp("security")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("PYNOMALY_DB_URL", raising=False)
        (root / "configs").mkdir()
        config = load_config(ROOT / "configs" / "demo.yaml")
        write_config(config, root / "configs" / "demo.yaml")
        Path(config.monitoring.scored_dir).mkdir(parents=True)
        url = database_url(config)
        migrate(url)
        with connect(url).begin() as connection:
            for name, role in (("ada", "admin"), ("vic", "viewer")):
                auth.add_user(connection, name, PASSWORD, role)
        yield root


@pytest.fixture(scope="module")
def app(site):
    return create_app(load_config(site / "configs" / "demo.yaml"))


def login_token(client: TestClient) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)


def try_login(client: TestClient, name: str, password: str = PASSWORD):
    return client.post("/login", data={"name": name, "password": password, "csrf_token": login_token(client)}, follow_redirects=False)


def log_in(client: TestClient, name: str) -> str:
    assert try_login(client, name).status_code == 303
    return re.search(r'"X-CSRF-Token": "([^"]+)"', client.get("/batches").text).group(1)


def audit_entries(app, action: str) -> list[tuple[str, str, str]]:
    with app.state.workbench.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.select(AUDIT.c.user, AUDIT.c.detail, AUDIT.c.client).where(AUDIT.c.action == action))]


# 6. A flood of failed logins

def test_a_flood_of_logins_on_sqlite_gets_no_500_and_keeps_the_limit_exact(tmp_path):
    """60 logins at once, 20 of them wrong passwords for one real account and 40 for random names, each as the route
    runs them: no database error, exactly the limit of failures audited for the account, and its owner, logging in
    right after, gets in once an admin unlocks it."""
    url = f"sqlite:///{tmp_path / 'workbench.db'}"
    migrate(url)
    engine = connect(url)
    with engine.begin() as connection:
        auth.add_user(connection, "tim", PASSWORD, "viewer")
    together, outcomes = threading.Barrier(60), []

    def attempt(name: str, client: str):
        together.wait()
        try:
            auth.login(engine, name, "wrong password", client)
            outcomes.append("in")
        except auth.AuthError as err:
            outcomes.append(type(err).__name__)
        except Exception as err:  # e.g. sqlite3.OperationalError: database is locked
            outcomes.append(repr(err))

    threads = [threading.Thread(target=attempt, args=("tim", f"10.0.0.{i}")) for i in range(20)]
    threads += [threading.Thread(target=attempt, args=(f"nobody{i}", f"10.0.1.{i}")) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(outcomes)) == ["AuthError", "TooManyAttempts"], outcomes
    with engine.connect() as connection:
        failed = connection.execute(sa.select(AUDIT.c.user, sa.func.count()).where(AUDIT.c.action == "login_failed").group_by(AUDIT.c.user)).all()
    counts = dict(failed)
    assert counts.pop("tim") == auth.MAX_FAILED_LOGINS and outcomes.count("TooManyAttempts") == 20 - auth.MAX_FAILED_LOGINS
    assert set(counts.values()) == {1} and len(counts) == 40
    with pytest.raises(auth.TooManyAttempts):
        auth.login(engine, "tim", PASSWORD, "10.0.2.1")
    engine.dispose()


def test_one_address_has_one_login_in_flight_so_its_flood_queues_ahead_of_nobody(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'workbench.db'}"
    migrate(url)
    engine = connect(url)
    checking, release = threading.Event(), threading.Event()

    class Slow:  # a password check that takes until released
        def verify(self, hash, password):
            checking.set()
            release.wait(30)
            raise auth.VerificationError

    monkeypatch.setattr(auth, "_hasher", Slow())
    first = threading.Thread(target=lambda: pytest.raises(auth.AuthError, auth.login, engine, "a", "x", "192.0.2.9"))
    first.start()
    assert checking.wait(30)
    with pytest.raises(auth.TooManyAttempts, match="another login from this address is in progress"):
        auth.login(engine, "b", "x", "192.0.2.9")
    release.set()
    first.join()
    with pytest.raises(auth.AuthError) as raised:  # the address is free again
        auth.login(engine, "b", "x", "192.0.2.9")
    assert not isinstance(raised.value, auth.TooManyAttempts)
    engine.dispose()


def test_a_right_login_turns_its_attempt_into_the_login_entry(app):
    client = TestClient(app)
    assert try_login(client, "vic").status_code == 303
    entries = [e for e in audit_entries(app, "login") if e[0] == "vic"]
    assert entries and not [e for e in audit_entries(app, "login_failed") if e[0] == "vic"]



# 6. Device cookies (OWASP): a user's own device gets past a locked name, and past a flood

def device_cookie_of(response, days: int = auth.DEVICE_COOKIE_DAYS) -> str:
    """The device cookie a login answer sets, after checking how it is set."""
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith("pynomaly_device="))
    attributes = {a.strip().lower() for a in header.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/login", f"max-age={days * 86400}"} <= attributes, header
    return header.split(";")[0].split("=", 1)[1]


def with_device(app, cookie: str) -> TestClient:
    client = TestClient(app)
    client.cookies.set("pynomaly_device", cookie)
    return client


def lock(app, name: str, attacker: str) -> None:
    """Someone at `attacker` (an address) locks the name; its owner, on a new device, is refused."""
    for _ in range(auth.MAX_FAILED_LOGINS):
        assert try_login(TestClient(app, client=(attacker, 5000)), name, "not the password").status_code == 401
    assert try_login(TestClient(app), name).status_code == 429


def test_a_device_cookie_lets_its_owner_past_a_locked_name_and_no_other_cookie_does(app, monkeypatch):
    with app.state.workbench.engine.begin() as connection:
        for name in ("dee", "eve"):
            auth.add_user(connection, name, PASSWORD, "viewer")
    owner = TestClient(app, client=("192.0.2.20", 5000))
    dee_cookie = device_cookie_of(try_login(owner, "dee"))
    lock(app, "dee", "198.51.100.20")
    assert try_login(owner, "dee").status_code == 303  # the owner's device: the name's lock does not apply
    assert ("dee", f"device {dee_cookie.split('.')[1]}", "192.0.2.20") in audit_entries(app, "login")

    lock(app, "eve", "198.51.100.21")
    key = app.state.workbench.device_key
    eve_cookie = auth.device_cookie(key, "eve", 1)
    monkeypatch.setattr(auth, "_now", lambda: datetime.now(timezone.utc) - timedelta(days=2))
    expired = auth.device_cookie(key, "eve", 1)
    monkeypatch.undo()
    name_hex, nonce, expires, signature = dee_cookie.split(".")
    refused = {
        "another name's": dee_cookie,
        "tampered": ".".join(["eve".encode().hex(), nonce, expires, signature]),
        "expired": expired,
        "unsigned": ".".join(eve_cookie.split(".")[:3] + ["0" * 64]),
    }
    for why, cookie in refused.items():
        assert try_login(with_device(app, cookie), "eve").status_code == 429, why
    assert try_login(with_device(app, eve_cookie), "eve").status_code == 303  # made the same way, valid


def test_the_device_cookies_lifetime_is_a_setting_refused_when_not_whole_days(site, monkeypatch):
    monkeypatch.setenv("PYNOMALY_DEVICE_COOKIE_DAYS", "0.5")
    with pytest.raises(DataError, match="PYNOMALY_DEVICE_COOKIE_DAYS is how long a device cookie lasts, in whole days"):
        create_app(load_config(site / "configs" / "demo.yaml"))
    monkeypatch.setenv("PYNOMALY_DEVICE_COOKIE_DAYS", "7")
    device_cookie_of(try_login(TestClient(create_app(load_config(site / "configs" / "demo.yaml"))), "vic"), days=7)


def test_wrong_passwords_from_a_device_count_for_it_and_refuse_it_at_the_limit(app):
    with app.state.workbench.engine.begin() as connection:
        auth.add_user(connection, "fay", PASSWORD, "viewer")
    owner = TestClient(app, client=("192.0.2.30", 5000))
    assert try_login(owner, "fay").status_code == 303
    lock(app, "fay", "198.51.100.30")
    for _ in range(auth.MAX_FAILED_LOGINS):
        assert try_login(owner, "fay", "a typo").status_code == 401  # counted for the device, not the name
    assert len([e for e in audit_entries(app, auth.DEVICE_FAILED) if e[0] == "fay"]) == auth.MAX_FAILED_LOGINS
    refused = try_login(owner, "fay")  # the device is refused: an untrusted login, and the name is locked
    assert refused.status_code == 429 and f"too many failed logins for &#39;fay&#39;" in refused.text


def test_a_trusted_login_gets_in_while_a_flood_holds_every_untrusted_thread_and_check(site, monkeypatch):
    """A real server (uvicorn, in this process so the password check can be faked): the flood's checks block until
    released, so its logins fill the server's thread pool and the per-core check slots; a login with its device cookie
    still gets in, and the flood, once released, is refused as usual."""
    import uvicorn

    app = create_app(load_config(site / "configs" / "demo.yaml"))
    real, release = auth._hasher, threading.Event()

    class HeldForFlood:  # PasswordHasher has __slots__, so it is wrapped rather than patched
        def verify(self, hash, password):
            if password == "flood":
                release.wait(300)
                raise auth.VerificationError
            return real.verify(hash, password)

    monkeypatch.setattr(auth, "_hasher", HeldForFlood())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving_thread = threading.Thread(target=server.run)
    serving_thread.start()
    flood, statuses = [], []
    try:
        wait_until(lambda: server.started, 60, "the server started")
        status, cookies = http_login(port, "vic", PASSWORD, "127.0.240.1", "")
        assert status == 303 and "pynomaly_device=" in cookies
        device = re.search(r"pynomaly_device=[^;]+", cookies).group(0)
        pool = 40  # anyio's default thread pool, which every sync route and every untrusted login runs on
        flood = [threading.Thread(target=lambda i=i: statuses.append(http_login(port, f"held{i}", "flood", f"127.0.241.{i + 1}", "")[0]))
                 for i in range(pool + 10)]
        for thread in flood:
            thread.start()
        wait_until(lambda: sum(e[0].startswith("held") for e in audit_entries(app, "login_failed")) >= pool, 120,
                   "the flood's logins took every thread of the pool")
        assert statuses == []  # all held
        assert http_login(port, "vic", PASSWORD, "127.0.240.1", device)[0] == 303
        assert statuses == []  # the flood is still held: the trusted login went past it
    finally:
        release.set()
        for thread in flood:
            thread.join()
        server.should_exit = True
        serving_thread.join()
    assert statuses == [401] * (pool + 10)


def http_login(port: int, name: str, password: str, source: str, cookie: str) -> tuple[int, str]:
    """GET the form and POST /login from `source` (a loopback address) with `cookie`: the status and Set-Cookie."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(source, 0))
    try:
        connection.request("GET", "/login", headers={"Cookie": cookie})
        form = connection.getresponse()
        csrf = re.search(r"pynomaly_login_csrf=[^;]+", form.getheader("set-cookie")).group(0)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.read().decode()).group(1)
        connection.request("POST", "/login", body=urllib.parse.urlencode({"name": name, "password": password, "csrf_token": token}),
                           headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": "; ".join(filter(None, [csrf, cookie]))})
        answer = connection.getresponse()
        answer.read()
        return answer.status, ", ".join(answer.headers.get_all("set-cookie") or [])
    finally:
        connection.close()


# 7. A per-client limit, and an admin's unlock

def test_one_client_guessing_across_many_names_is_stopped_and_an_admin_unlocks_an_account(app):
    guesser = TestClient(app, client=("192.0.2.1", 5000))  # every request from one address
    for i in range(auth.MAX_FAILED_LOGINS_PER_CLIENT):
        assert try_login(guesser, f"guess{i}", "Winter2026!").status_code == 401
    stopped = try_login(guesser, "guess-next", "Winter2026!")
    assert stopped.status_code == 429 and "too many failed logins from this address" in stopped.text
    assert try_login(TestClient(app, client=("192.0.2.2", 5000)), "vic").status_code == 303  # others are not held up

    locker = TestClient(app, client=("192.0.2.3", 5000))
    for _ in range(auth.MAX_FAILED_LOGINS):  # someone locks ada, the admin
        assert try_login(locker, "ada", "not her password").status_code == 401
    client = TestClient(app)
    assert try_login(client, "ada").status_code == 429
    other_admin = TestClient(app)
    with app.state.workbench.engine.begin() as connection:
        auth.add_user(connection, "root2", PASSWORD, "admin")
    csrf = log_in(other_admin, "root2")
    viewer = TestClient(app)
    viewer_csrf = log_in(viewer, "vic")
    assert viewer.post("/admin/users/unlock", data={"name": "ada", "csrf_token": viewer_csrf}).status_code == 403
    unlocked = other_admin.post("/admin/users/unlock", data={"name": "ada", "csrf_token": csrf}, follow_redirects=False)
    assert unlocked.status_code == 303 and unlocked.headers["location"] == "/admin?done=unlocked"
    assert try_login(client, "ada").status_code == 303
    assert ("root2", "ada") in [e[:2] for e in audit_entries(app, auth.UNLOCKED)]
    assert other_admin.post("/admin/users/unlock", data={"name": "nobody", "csrf_token": csrf}).status_code == 404


def test_the_admin_page_filters_the_audit_log_by_event_and_user(app):
    admin = TestClient(app)
    log_in(admin, "ada")
    for i in range(60):  # a flood, from many addresses, pushes everything else off the latest 50
        try_login(TestClient(app, client=(f"198.51.100.{i}", 5000)), f"flood{i}", "x")
    page = admin.get("/admin", params={"action": "login", "who": "ada"}).text
    rows = re.findall(r"<tr><td>[^<]*</td><td>([^<]*)</td><td>([^<]*)</td>", page.split('id="audit"')[1])
    assert rows and set(rows) == {("ada", "login")}
    assert '<option selected>login</option>' in page


# 15. Names and passwords

@pytest.mark.parametrize(("name", "password", "reason"), [
    ("root1", "password", "top-10 common password"),
    ("root1", "Password123!", "similar to a commonly used password"),
    ("root1", "root1root1", "Repeats"),
    ("rооt1", PASSWORD, "mixes letters of CYRILLIC and LATIN"),  # two Cyrillic o's
    ("ro ot", PASSWORD, "spaces or control characters"),
])
def test_weak_passwords_and_look_alike_names_are_refused_with_a_reason(app, name, password, reason):
    admin = TestClient(app)
    csrf = log_in(admin, "ada")
    refused = admin.post("/admin/users", data={"name": name, "password": password, "role": "viewer", "csrf_token": csrf})
    assert refused.status_code == 422 and reason in refused.text.replace("&#34;", '"')


def test_names_are_stored_normalised_so_a_trailing_space_or_full_width_form_is_the_same_name(app):
    admin = TestClient(app)
    csrf = log_in(admin, "ada")
    assert admin.post("/admin/users", data={"name": "root1", "password": PASSWORD, "role": "viewer", "csrf_token": csrf},
                      follow_redirects=False).status_code == 303
    for twin in ("root1 ", "ｒｏｏｔ１"):  # full-width letters: NFKC makes them root1
        again = admin.post("/admin/users", data={"name": twin, "password": PASSWORD, "role": "viewer", "csrf_token": csrf})
        assert again.status_code == 422 and "exists already" in again.text
    assert try_login(TestClient(app), " root1 ").status_code == 303  # the typed name is normalised the same way


def test_the_cli_refuses_a_common_password(site):
    done = subprocess.run([sys.executable, "-m", "pynomaly_core.cli", "users", "add", "cliuser", "--password-stdin"], cwd=site,
                          input="password\n", capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "too weak" in done.stderr and "Traceback" not in done.stderr


# 16. Keys and accounts an admin manages

def test_revoking_an_unknown_key_says_so_and_a_disabled_user_loses_their_sessions(app):
    admin = TestClient(app)
    csrf = log_in(admin, "ada")
    unknown = admin.post("/admin/keys/revoke", data={"key_id": 987654, "csrf_token": csrf})
    assert unknown.status_code == 404 and "No live key with id 987654" in unknown.text
    assert not [e for e in audit_entries(app, "api_key_revoked") if e[1] == "key 987654"]

    with app.state.workbench.engine.begin() as connection:
        auth.add_user(connection, "dan", PASSWORD, "viewer")
    dan = TestClient(app)
    log_in(dan, "dan")
    assert admin.post("/admin/users/end-sessions", data={"name": "dan", "csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert dan.get("/batches", follow_redirects=False).headers["location"] == "/login"
    log_in(dan, "dan")
    assert admin.post("/admin/users/disable", data={"name": "dan", "csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert dan.get("/batches", follow_redirects=False).headers["location"] == "/login"
    refused = try_login(dan, "dan")
    assert refused.status_code == 401 and "disabled" in refused.text
    with app.state.workbench.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(SESSIONS).join(auth.USERS).where(auth.USERS.c.name == "dan")).scalar_one() == 0
    assert admin.post("/admin/users/enable", data={"name": "dan", "csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert try_login(dan, "dan").status_code == 303
    assert admin.post("/admin/users/disable", data={"name": "ada", "csrf_token": csrf}).status_code == 422  # not oneself


# 5. The scoring API: the key before the body, a bounded body, deep JSON

def api_key(app) -> str:
    with app.state.workbench.engine.begin() as connection:
        return auth.create_api_key(connection, "breast-cancer-detector", "test")


def test_the_api_answers_a_wrong_key_before_it_reads_the_body(site):
    with serving(site, "ui", "/healthz") as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /api/v1/score HTTP/1.1\r\nHost: x\r\nX-API-Key: pyn_wrong\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 300000000\r\n\r\n" + b"[" * 1000)  # 300 MB announced, 1 kB sent
            answer = b""
            while b"API key" not in answer and (chunk := sock.recv(4096)):  # the answer comes without the other 299.99 MB
                answer += chunk
            answer = answer.decode()
    assert answer.startswith("HTTP/1.1 401") and "missing, unknown or revoked API key" in answer


def test_the_api_caps_the_body_and_refuses_deep_json(app, site):
    capped = create_app(load_config(site / "configs" / "demo.yaml"), max_body_bytes=10_000)
    key = api_key(capped)
    client = TestClient(capped)
    big = client.post("/api/v1/score", content=b'{"rows": [' + b'{"a": 1},' * 5000 + b'{"a": 1}]}', headers={"X-API-Key": key})
    assert big.status_code == 413 and "PYNOMALY_MAX_BODY_BYTES" in big.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(100):
            yield b" " * 1000

    assert client.post("/api/v1/score", content=chunks(), headers={"X-API-Key": key}).status_code == 413
    deep = TestClient(app).post("/api/v1/score", content=b"[" * 5000 + b"]" * 5000, headers={"X-API-Key": api_key(app)})
    assert deep.status_code == 400 and "nested" in deep.json()["detail"]


# 8, 9, 10. What is read from scored_dir

def test_a_symlink_never_leads_a_read_out_of_scored_dir_nor_onto_the_batches_page(app, site, tmp_path):
    config = load_config(site / "configs" / "demo.yaml")
    scored = Path(config.monitoring.scored_dir)
    outside = tmp_path / "secret.csv"
    outside.write_text("_row,_errors,secret\n1,x,TOP-SECRET-VALUE\n")
    pd.DataFrame({"score": [0.1, 0.9], "is_anomaly": [0, 1]}).to_parquet(tmp_path / "elsewhere.parquet")
    (scored / "linked.parquet").symlink_to(tmp_path / "elsewhere.parquet")
    pd.DataFrame({"score": [0.1], "is_anomaly": [0]}).to_parquet(scored / "parts.parquet")
    parts = scored / "parts.rejected.csv"
    parts.mkdir()
    (parts / "part-00000.csv").write_text("_row,_errors,secret\n2,y,harmless\n")
    (parts / "part-00001.csv").symlink_to(outside)
    (scored / "leak.drift.html").symlink_to(tmp_path / "secret.csv")
    client = TestClient(app)
    log_in(client, "vic")
    listed = client.get("/batches").text
    assert ">parts</a>" in listed and ">linked</a>" not in listed
    rejected = client.get("/batches/rejected", params={"batch": "parts"})
    assert rejected.status_code == 200 and "harmless" in rejected.text and "TOP-SECRET-VALUE" not in rejected.text
    assert client.get("/batches/drift", params={"batch": "leak"}).status_code == 404
    assert client.get("/review", params={"batch": "linked"}).status_code == 404
    assert not catalog.inside_scored_dir(config, scored / "linked.parquet")


@pytest.mark.parametrize(("method", "path"), [("GET", "/batches/rejected"), ("GET", "/batches/drift"), ("GET", "/review"),
                                              ("GET", "/review/shap"), ("GET", "/row"), ("GET", "/row/lime"), ("POST", "/label")])
def test_a_nul_byte_in_a_batch_name_is_a_404(app, method, path):
    client = TestClient(app, raise_server_exceptions=False)
    csrf = log_in(client, "ada")
    params = {"batch": "x\x00y", "row": "1"}
    if method == "GET":
        response = client.get(path, params=params)
    else:
        response = client.post(path, data={**params, "label": "anomaly"}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 404


def test_drift_reports_are_served_sandboxed(app, site):
    scored = Path(load_config(site / "configs" / "demo.yaml").monitoring.scored_dir)
    (scored / "report.drift.html").write_text("<html><body>report</body></html>")
    client = TestClient(app)
    log_in(client, "vic")
    report = client.get("/batches/drift", params={"batch": "report"})
    assert report.status_code == 200 and report.headers["content-security-policy"] == REPORT_CSP
    assert report.headers["content-security-policy"].startswith("sandbox allow-scripts;") and "allow-same-origin" not in REPORT_CSP


# 11, 12, 13. Headers, messages, /metrics

def test_every_page_sends_the_security_headers(app):
    client = TestClient(app)
    for path in ("/login", "/static/htmx.min.js"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"] and "script-src 'self'" in headers["content-security-policy"]
        assert (headers["x-frame-options"], headers["x-content-type-options"], headers["referrer-policy"]) == ("DENY", "nosniff", "same-origin")
    log_in(client, "ada")
    assert client.get("/admin").headers["x-frame-options"] == "DENY"


def test_pages_show_no_text_from_the_url(app):
    client = TestClient(app)
    assert "Call 555" not in client.get("/login", params={"error": "Call 555 to unlock"}).text
    log_in(client, "ada")
    page = client.get("/admin", params={"message": "Call 555", "new_key": "pyn_fake", "done": "Call 555"}).text
    assert "Call 555" not in page and "pyn_fake" not in page and 'id="new-key"' not in page
    assert "Key revoked." in client.get("/admin", params={"done": "key_revoked"}).text


def test_a_500_is_counted_in_metrics(app, monkeypatch):
    client = TestClient(app, raise_server_exceptions=False)
    log_in(client, "vic")
    monkeypatch.setattr(catalog, "detectors", lambda *a, **k: 1 / 0)
    assert client.get("/detectors").status_code == 500
    metrics = client.get("/metrics").text
    assert re.search(r'pynomaly_http_requests_total\{method="GET",route="/detectors",status="500"\} 1\.0', metrics)


# 14. Forwarded client addresses

def test_a_forwarded_address_is_believed_only_from_a_configured_proxy(site):
    def failed_client(options: tuple[str, ...]) -> str:
        with serving(site, "ui", "/healthz", options) as url:
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
            token = re.search(r'name="csrf_token" value="([^"]+)"', opener.open(f"{url}/login").read().decode()).group(1)
            name = f"forwarded{len(options)}"
            request = urllib.request.Request(f"{url}/login", data=urllib.parse.urlencode({"name": name, "password": "x", "csrf_token": token}).encode(),
                                             headers={"X-Forwarded-For": "203.0.113.9"})
            with pytest.raises(urllib.error.HTTPError):
                opener.open(request)
        with sqlite3.connect(site / "mlflow" / "workbench.db") as db:
            return db.execute("SELECT client FROM audit_log WHERE user = ? AND action = 'login_failed'", [name]).fetchone()[0]

    assert failed_client(()) == "127.0.0.1"
    assert failed_client(("--trusted-proxies", "127.0.0.1")) == "203.0.113.9"


# 8, 11 in a browser: HTMX and the pages' scripts work under the CSP; a report's script runs but cannot reach the workbench

def test_in_a_browser_pages_work_under_the_csp_and_a_report_script_cannot_act_on_the_workbench(site):
    from playwright.sync_api import expect, sync_playwright

    scored = Path(load_config(site / "configs" / "demo.yaml").monitoring.scored_dir)
    (scored / "evil.drift.html").write_text("""<html><head><title>loading</title></head><body><p id="out">report</p><script>
document.title = "ran";
fetch("/admin", {credentials: "include"}).then(r => r.text())
  .then(t => { document.title = /csrf_token/.test(t) ? "stolen" : "no-token"; })
  .catch(() => { document.title = "blocked"; });
</script></body></html>""")
    with serving(site, "ui", "/healthz") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        violations = []
        page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
        page.goto(f"{url}/login")
        page.fill("input[name=name]", "ada")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{url}/batches")
        page.goto(f"{url}/detectors")
        rows = page.locator("#detector-rows tr")
        everything = rows.count()
        page.fill("input[name=q]", "iforest")  # HTMX swaps the filtered rows in
        expect(rows).not_to_have_count(everything)
        assert page.evaluate("typeof htmx") == "object"
        assert not violations, violations  # the pages' own scripts and styles pass the CSP

        page.goto(f"{url}/batches/drift?batch=evil")
        expect(page).to_have_title(re.compile("blocked|no-token"))  # the report's script ran, and read nothing
        browser.close()
