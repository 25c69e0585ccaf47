"""The analysts' workbench: a real browser (Debian's chromium through Playwright) against `pynomaly ui`,
and its rules through the HTTP API: roles, CSRF, API keys, failed logins, concurrent labels on
PostgreSQL, and a retraining that uses the labels."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from prefect import get_client

from flows.training import training_flow
from pynomaly_core.labels import feedback
from pynomaly_core.monitoring import monitor as monitoring
from pynomaly_core import stages
from pynomaly_core.config import load_config
from pynomaly_core.labels.review import member_scores, review_order
from pynomaly_core.labels.feedback import LABELS, batch_file, database_url, row_ids
from pynomaly_core.data.preprocessing import features
from pynomaly_core.scoring.files import load_model, score_frame
from tests.conftest import ROOT, demo_config, prefect_harness, write_config
from tests.services import serving
from workbench import auth, catalog, review
from workbench.app import create_app
from workbench.db import AUDIT, audit, connect, migrate
from workbench.retrain import feedback_config, trigger_training

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
BATCH = "batch"  # data/scored/batch.parquet


def small_config():
    return demo_config(detectors=["iforest"], n_trials=2, cv_folds=2)


def add_user(name: str, role: str) -> None:
    flag = ["--admin"] if role == "admin" else ["--role", role]
    done = subprocess.run([sys.executable, "-m", "pynomaly_core.cli", "users", "add", name, *flag, "--password-stdin"],
                          input=PASSWORD + "\n", capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder (the current directory) with a registered champion, one scored and judged batch
    of 120 rows (two of them rejected) and three users: ada (admin), ann (analyst), vic (viewer)."""
    root = tmp_path_factory.mktemp("workbench")
    shutil.copytree(ROOT / "data" / "raw", root / "data" / "raw")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("PYNOMALY_DB_URL", raising=False)
        config = small_config()
        (root / "configs").mkdir()
        write_config(config, root / "configs" / "demo.yaml")
        for name in ("validate", "preprocess", "train", "evaluate", "register"):
            stages.STAGES[name](config)
        batch = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns="malignant").sample(120, random_state=1)
        batch.loc[batch.index[:2], "mean_radius"] = -5.0  # rejected: below the column's minimum
        batch.to_csv(root / f"{BATCH}.csv", index=False)
        monitoring.monitor_drift(config, monitoring.score_batch(config, f"{BATCH}.csv"))  # what `pynomaly monitor` does
        for name, role in (("ada", "admin"), ("ann", "analyst"), ("vic", "viewer")):
            add_user(name, role)
        yield root
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def app(project):
    return create_app(load_config(project / "configs" / "demo.yaml"))


def log_in(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log `client` in; returns the session's CSRF token."""
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    response = client.post("/login", data={"name": name, "password": password, "csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return re.search(r'"X-CSRF-Token": "([^"]+)"', client.get("/batches").text).group(1)


def queue_rows(client: TestClient) -> list[str]:
    return re.findall(r'data-row="([^"]+)"', client.get(f"/review?batch={BATCH}").text)


def labels_in_db(engine) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(sa.select(LABELS).order_by(LABELS.c.id)).mappings().all())


# The browser path

@pytest.fixture(scope="module")
def server(project):
    """`pynomaly ui` on a free port, run from the project folder."""
    with serving(project, "ui", "/healthz") as url:
        yield url


def test_browser_login_label_three_rows_by_keyboard_and_log_out(project, server):
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ["PYNOMALY_SCREENSHOTS"]) if os.environ.get("PYNOMALY_SCREENSHOTS") else None  # docs/ui/ is made this way
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{server}/batches")
        expect(page).to_have_url(f"{server}/login")
        page.fill("input[name=name]", "ann")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("#batches")).to_contain_text("118")  # the valid rows of the batch
        if shots:
            page.screenshot(path=shots / "batches.png", full_page=True)
        page.click(f"#batches a:text-is('{BATCH}')")
        expect(page.locator("#queue .queue-row").first).to_have_class(re.compile("selected"))
        expect(page.locator("#queue .shap .feature").first).to_be_visible(timeout=60_000)  # the SHAP column filled in (SHAP loads on first use)
        rows = page.locator("#queue .queue-row").evaluate_all("rows => rows.map(r => r.dataset.row)")[:3]

        page.keyboard.press("c")  # confirm the first row, dismiss the second, unsure about the third
        page.keyboard.press("d")
        page.keyboard.press("n")  # a note on the third
        page.keyboard.type("borderline texture")
        page.keyboard.press("Escape")
        page.keyboard.press("u")
        for row, text in zip(rows, ("confirmed anomaly", "dismissed (normal)", "unsure")):
            expect(page.locator(f"tr[data-row='{row}'] td.current")).to_have_text(text)
        if shots:
            page.screenshot(path=shots / "review.png", full_page=True)
            page.click(f"tr[data-row='{rows[0]}'] a.open")
            expect(page.locator("#features")).to_be_visible()
            page.screenshot(path=shots / "row.png", full_page=True)
            for name in ("models", "detectors"):
                page.goto(f"{server}/{name}")
                page.screenshot(path=shots / f"{name}.png", full_page=True)

        page.click("#logout")
        expect(page).to_have_url(f"{server}/login")
        page.goto(f"{server}/batches")
        expect(page).to_have_url(f"{server}/login")  # the session is gone
        if shots:
            page.screenshot(path=shots / "login.png")
            page.fill("input[name=name]", "ada")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.goto(f"{server}/admin")
            page.screenshot(path=shots / "admin.png", full_page=True)
        browser.close()

    engine = connect(database_url(load_config(project / "configs" / "demo.yaml")))
    labels = labels_in_db(engine).set_index("row_id").loc[rows]
    assert labels["label"].tolist() == ["anomaly", "normal", "unsure"]
    assert set(labels["user"]) == {"ann"} and set(labels["batch"]) == {BATCH}
    assert labels["model_version"].tolist() == ["1"] * 3 and labels["note"].tolist() == ["", "", "borderline texture"]
    with engine.connect() as connection:
        audit = connection.execute(sa.select(AUDIT.c.user, AUDIT.c.detail).where(AUDIT.c.action == "label")).all()
    assert {(user, f"{BATCH} row {row}") for user, row in zip(["ann"] * 3, rows)} <= {(u, d.split(":")[0]) for u, d in audit}


# The pages

def test_pages_show_versions_batches_rejected_rows_drift_and_detectors(app, project):
    client = TestClient(app)
    log_in(client, "vic")
    models = client.get("/models").text
    assert "@champion" in models and "@challenger" in models and "roc_auc = 0.9" in models and "consensus: consensus_spearman" in models
    batches = client.get("/batches").text
    assert re.search(rf">{BATCH}</a></td>\s*<td>monitor</td>\s*<td>118</td>", batches)
    assert "2 with reasons" in batches and "Evidently report" in batches and re.search(r'class="(good|bad)">(no drift|drift: )', batches)
    rejected = client.get("/batches/rejected", params={"batch": BATCH}).text
    assert rejected.count("mean_radius") >= 3 and "_errors" in rejected  # the column header and both rows' reasons
    report = client.get("/batches/drift", params={"batch": BATCH})
    assert report.status_code == 200 and report.text == (project / "data" / "scored" / f"{BATCH}.drift.html").read_text()
    pyod_only = client.get("/detectors", params={"backend": "pyod"}, headers={"HX-Request": "true"}).text
    assert "<td>iforest</td>" in pyod_only and "<td>sk_iforest</td>" not in pyod_only and "<html" not in pyod_only
    assert client.get("/batches/rejected", params={"batch": "../configs/demo"}).status_code == 404
    scored = project / "data" / "scored"
    for suffix in (".rejected.csv", ".drift.html", ".parquet"):  # a batch named by an absolute path outside scored_dir
        shutil.copy(scored / f"{BATCH}{suffix}", project / f"outside{suffix}")
    for path in ("/batches/rejected", "/batches/drift", "/review"):
        assert client.get(path, params={"batch": str(project / "outside")}).status_code == 404


def test_a_batch_scored_on_spark_shows_its_rejected_rows_from_the_part_files(app, project):
    """`--engine spark` writes the rejected rows as a folder of CSV parts, each with its header."""
    scored = project / "data" / "scored"
    shutil.copy(scored / f"{BATCH}.parquet", scored / "on-spark.parquet")
    rejected = pd.read_csv(scored / f"{BATCH}.rejected.csv")
    parts = scored / "on-spark.rejected.csv"
    parts.mkdir()
    rejected.head(1).to_csv(parts / "part-00000.csv", index=False)
    rejected.tail(1).to_csv(parts / "part-00001.csv", index=False)
    (parts / "_SUCCESS").touch()
    client = TestClient(app)
    log_in(client, "vic")
    row = re.search(r">on-spark</a></td>.*?</tr>", client.get("/batches").text, re.S).group(0)
    assert "2 with reasons" in row
    page = client.get("/batches/rejected", params={"batch": "on-spark"})
    assert page.status_code == 200 and "The first 2 rejected rows" in page.text
    shown_rows = re.findall(r"<tr><td>(\d+)</td>", page.text)  # each row's first cell: its row number in the input
    assert shown_rows == [str(row) for row in rejected["_row"]]


def test_a_batch_shows_its_newest_scoring_run_however_many_runs_there_are(app, project, monkeypatch):
    config = load_config(project / "configs" / "demo.yaml")
    mlflow_client = catalog.client(config)
    experiment = mlflow_client.get_experiment_by_name(config.tracking.experiment).experiment_id
    monkeypatch.setattr(catalog, "MAX_RUNS", 1)  # more runs than are read
    newest = mlflow_client.create_run(experiment, tags={"pynomaly.stage": "scoring", "batch": f"{BATCH}.csv", "model_uri": "models:/newest/9"})
    try:
        assert catalog.batch_model_uri(config, BATCH) == "models:/newest/9"
    finally:
        mlflow_client.delete_run(newest.info.run_id)


def test_label_buttons_carry_any_batch_and_row_id_as_json(app, project):
    client = TestClient(app)
    log_in(client, "ann")
    odd = 'q"uo\\te'  # a quote and a backslash, as a file name may hold
    copy = project / "data" / "scored" / f"{odd}.parquet"
    shutil.copy(project / "data" / "scored" / f"{BATCH}.parquet", copy)
    try:
        page = client.get("/review", params={"batch": odd}).text
    finally:
        copy.unlink()
    values = [json.loads(html.unescape(v)) for v in re.findall(r"hx-vals='([^']*)'", page)]
    rows = re.findall(r'data-row="([^"]+)"', page)
    assert len(values) == 3 * len(rows) == 75 and all(len(v.pop("version")) == 64 for v in values)  # the file's fingerprint
    assert values[:3] == [{"batch": odd, "row": html.unescape(rows[0]), "label": label} for label in ("anomaly", "normal", "unsure")]


def test_queue_follows_the_active_learning_rule_and_lime_explains_a_row_on_demand(app, project):
    client = TestClient(app)
    log_in(client, "vic")
    config = load_config(project / "configs" / "demo.yaml")
    frame = pd.read_parquet(batch_file(config, BATCH))
    python_model = load_model(f"models:/{config.registry.model_name}@champion").unwrap_python_model()
    pipeline = python_model.pipeline
    expected = review_order(frame["score"].to_numpy(), member_scores(pipeline, features(frame, python_model.data_config)), float(pipeline[-1].threshold_))
    assert queue_rows(client) == list(row_ids(frame, config.data.id_column).iloc[expected[:25]])

    row = queue_rows(client)[0]
    fragment = client.get("/row/lime", params={"batch": BATCH, "row": row}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    names = re.findall(r"<tr><td>([^<]+)</td>", fragment.text)
    assert sorted(names) == sorted(python_model.data_config.columns)  # every feature, each once
    assert 'hx-get="/row/lime' in client.get("/row", params={"batch": BATCH, "row": row}).text


def test_lime_without_the_explain_extra_says_what_to_install(app, monkeypatch):
    client = TestClient(app)
    log_in(client, "vic")
    for module in ("lime", "lime.lime_base"):
        monkeypatch.setitem(sys.modules, module, None)  # `import lime` raises ImportError, as where the extra is not installed
    fragment = client.get("/row/lime", params={"batch": BATCH, "row": queue_rows(client)[0]}, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "pip install 'pynomaly[explain]'" in html.unescape(fragment.text)


# Roles, CSRF and logins

def test_a_viewer_cannot_label_and_posts_without_csrf_are_refused(app):
    viewer, analyst = TestClient(app), TestClient(app)
    viewer_csrf = log_in(viewer, "vic")
    log_in(analyst, "ann")
    row = queue_rows(viewer)[0]
    label = {"batch": BATCH, "row": row, "label": "anomaly"}

    refused = viewer.post("/label", data=label, headers={"X-CSRF-Token": viewer_csrf})
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    for client, path, data in ((analyst, "/label", label), (analyst, "/logout", {}), (viewer, "/logout", {"csrf_token": "forged"}),
                                 (viewer, "/logout", {"csrf_token": "forgé"})):  # non-ASCII: refused, not a server error
        response = client.post(path, data=data, follow_redirects=False)
        assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert TestClient(app).post("/login", data={"name": "ann", "password": PASSWORD}).status_code == 403  # no login token
    assert TestClient(app).get("/review", params={"batch": BATCH}, follow_redirects=False).headers["location"] == "/login"


def test_failed_logins_are_limited_and_audited(app):
    client = TestClient(app)
    add_user("tim", "viewer")
    for _ in range(5):
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        assert client.post("/login", data={"name": "tim", "password": "wrong password", "csrf_token": token}).status_code == 401
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    blocked = client.post("/login", data={"name": "tim", "password": PASSWORD, "csrf_token": token})
    assert blocked.status_code == 429 and "too many failed logins" in blocked.text
    with app.state.workbench.engine.connect() as connection:
        failures = connection.execute(sa.select(sa.func.count()).where(AUDIT.c.action == "login_failed", AUDIT.c.user == "tim")).scalar_one()
    assert failures == 5


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_burst_of_failed_logins_cannot_pass_the_limit(backend, tmp_path, request):
    """Three times the limit of wrong passwords, all at once, each in its own transaction as the login route runs them:
    exactly the limit is checked and audited, the rest are refused before any password check."""
    url = f"sqlite:///{tmp_path / 'workbench.db'}" if backend == "sqlite" else \
        f"postgresql+psycopg://postgres@127.0.0.1:5432/{request.getfixturevalue('scratch_database')}"
    migrate(url)
    engine = connect(url)
    with engine.begin() as connection:
        auth.add_user(connection, "tim", PASSWORD, "viewer")
    attempts = 3 * auth.MAX_FAILED_LOGINS
    together, outcomes = threading.Barrier(attempts), []

    def attempt():
        together.wait()
        with engine.begin() as connection:
            try:
                auth.login(connection, "tim", "wrong password", "test")
            except auth.AuthError as err:
                outcomes.append(type(err).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with engine.connect() as connection:
        audited = connection.execute(sa.select(sa.func.count()).where(AUDIT.c.action == "login_failed")).scalar_one()
    engine.dispose()
    assert sorted(outcomes) == ["AuthError"] * auth.MAX_FAILED_LOGINS + ["TooManyAttempts"] * (attempts - auth.MAX_FAILED_LOGINS)
    assert audited == auth.MAX_FAILED_LOGINS


def test_unknown_names_cost_a_password_check_and_names_fit_their_columns(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'workbench.db'}"
    migrate(url)
    engine = connect(url)
    checked = []

    class Spy:  # PasswordHasher has __slots__, so it is wrapped rather than patched
        def verify(self, hash, password):
            checked.append(hash)
            return auth.PasswordHasher().verify(hash, password)

    monkeypatch.setattr(auth, "_hasher", Spy())
    with engine.begin() as connection:
        with pytest.raises(auth.AuthError, match="wrong user name or password"):
            auth.login(connection, "nobody", PASSWORD, "test")
        assert checked == [auth._DUMMY_HASH]  # the same argon2 work as a known name's
        with pytest.raises(auth.AuthError, match="at most 100 characters, not 101"):
            auth.add_user(connection, "x" * 101, PASSWORD, "viewer")
        audit(connection, "y" * 150, "logout")
        assert len(connection.execute(sa.select(AUDIT.c.user).where(AUDIT.c.action == "logout")).scalar_one()) == 100  # PostgreSQL refuses longer


def test_cli_refuses_a_user_name_longer_than_its_column(project):
    done = subprocess.run([sys.executable, "-m", "pynomaly_core.cli", "users", "add", "n" * 101, "--password-stdin"],
                          input=PASSWORD + "\n", capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "at most 100 characters" in done.stderr and "Traceback" not in done.stderr


# API keys

def test_scoring_api_keys_validation_and_revocation(app, project):
    admin = TestClient(app)
    csrf = log_in(admin, "ada")
    page = admin.post("/admin/keys", data={"model": "breast-cancer-detector", "csrf_token": csrf}).text
    key = re.search(r'id="new-key">([^<]+)<', page).group(1)
    rows = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns="malignant").head(5)
    api = TestClient(app)

    scored = api.post("/api/v1/score", json={"rows": rows.to_dict("records")}, headers={"Authorization": f"Bearer {key}"})
    assert scored.status_code == 200, scored.text
    _, expected = score_frame(load_model("models:/breast-cancer-detector@champion"), rows, "check")  # what `pynomaly score` computes
    assert scored.json()["score"] == pytest.approx(expected["score"].tolist())
    assert scored.json()["is_anomaly"] == expected["is_anomaly"].tolist() and scored.json()["model_uri"] == "models:/breast-cancer-detector/1"

    bad = rows.to_dict("records")
    bad[1]["mean_texture"] = "rough"
    malformed = api.post("/api/v1/score", json={"rows": bad}, headers={"X-API-Key": key})
    assert malformed.status_code == 422
    assert malformed.json()["rejected"][0]["row"] == 2 and "mean_texture" in malformed.json()["rejected"][0]["errors"]
    assert "row 2" in malformed.json()["detail"]

    for header in ({}, {"X-API-Key": key + "x"}, {"Authorization": "Bearer pyn_guess"}):
        assert api.post("/api/v1/score", json={"rows": bad}, headers=header).status_code == 401
    with app.state.workbench.engine.connect() as connection:
        key_id, stored = connection.execute(sa.text("SELECT id, key_hash FROM api_keys ORDER BY id DESC")).first()
    assert key not in stored  # hashed
    admin.post("/admin/keys/revoke", data={"key_id": key_id, "csrf_token": csrf})
    assert api.post("/api/v1/score", json={"rows": rows.to_dict("records")}, headers={"X-API-Key": key}).status_code == 401
    metrics = api.get("/metrics").text
    assert 'pynomaly_scored_rows_total{model="breast-cancer-detector"} 5.0' in metrics
    assert re.search(r'pynomaly_http_requests_total\{method="POST",route="/api/v1/score",status="401"\} [4-9]', metrics)

    orphan = re.search(r'id="new-key">([^<]+)<', admin.post("/admin/keys", data={"model": "no-champion", "csrf_token": csrf}).text).group(1)
    missing = api.post("/api/v1/score", json={"rows": rows.to_dict("records")}, headers={"X-API-Key": orphan})
    assert missing.status_code == 404 and "no-champion@champion" in missing.json()["detail"]  # JSON, as the API's other errors


def test_scoring_runs_off_the_event_loop_so_health_checks_answer_meanwhile(app, monkeypatch):
    admin = TestClient(app)
    csrf = log_in(admin, "ada")
    key = re.search(r'id="new-key">([^<]+)<', admin.post("/admin/keys", data={"model": "breast-cancer-detector", "csrf_token": csrf}).text).group(1)
    load, started, answered, released = app.state.workbench.reviewer.model, threading.Event(), threading.Event(), []

    def slow_model(uri):  # holds the scoring request until /healthz has answered (on the event loop, never)
        started.set()
        released.append(answered.wait(10))
        return load(uri)

    monkeypatch.setattr(app.state.workbench.reviewer, "model", slow_model)
    rows = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns="malignant").head(2).to_dict("records")
    with TestClient(app) as client:  # one event loop for both requests
        scoring = threading.Thread(target=lambda: client.post("/api/v1/score", json={"rows": rows}, headers={"X-API-Key": key}))
        scoring.start()
        assert started.wait(30)
        health = client.get("/healthz")
        answered.set()
        scoring.join()
    assert health.status_code == 200 and released == [True]


# Two analysts at once, on PostgreSQL

def test_two_analysts_labelling_at_once_lose_nothing_on_postgresql(project, scratch_database):
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{scratch_database}"
    config = load_config(project / "configs" / "demo.yaml")
    first, second = create_app(config, db_url=url), create_app(config, db_url=url)  # two workers, one database
    with first.state.workbench.engine.begin() as connection:
        from workbench.auth import add_user as add_account

        for name in ("ann", "bob"):
            add_account(connection, name, PASSWORD, "analyst")
    clients = [TestClient(first), TestClient(second)]
    tokens = [log_in(client, name) for client, name in zip(clients, ("ann", "bob"))]
    rows = queue_rows(clients[0])
    errors = []

    def label_all(client, token, label):
        for row in rows:  # both label the same rows, at the same time
            response = client.post("/label", data={"batch": BATCH, "row": row, "label": label}, headers={"X-CSRF-Token": token})
            if response.status_code != 200:
                errors.append(response.text)

    threads = [threading.Thread(target=label_all, args=(c, t, label)) for c, t, label in zip(clients, tokens, ("anomaly", "normal"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    labels = labels_in_db(first.state.workbench.engine)
    assert len(labels) == 2 * len(rows) == 50
    assert labels.groupby("user")["row_id"].apply(sorted).to_dict() == {"ann": sorted(rows), "bob": sorted(rows)}
    with first.state.workbench.engine.connect() as connection:
        audited = connection.execute(sa.select(AUDIT.c.user, sa.func.count()).where(AUDIT.c.action == "label").group_by(AUDIT.c.user)).all()
    assert dict(audited) == {"ann": 25, "bob": 25}


# Labels back into training

def test_retrain_action_runs_the_deployment_and_the_run_records_the_labels(app, project):
    admin = TestClient(app)
    csrf = log_in(admin, "ada")
    analyst = TestClient(app)
    analyst_csrf = log_in(analyst, "ann")
    rows = queue_rows(analyst)[:4]
    for row, label in zip(rows, ("anomaly", "anomaly", "normal", "unsure")):
        assert analyst.post("/label", data={"batch": BATCH, "row": row, "label": label}, headers={"X-CSRF-Token": analyst_csrf}).status_code == 200

    with prefect_harness():
        deployment_id = training_flow.to_deployment(name="training").apply()
        try:
            response = admin.post("/admin/retrain", data={"csrf_token": csrf}, follow_redirects=False)
            assert response.status_code == 303
            flow_run_id = re.search(r"\(([0-9a-f-]{36})\)", urllib.parse.unquote_plus(response.headers["location"])).group(1)
            with get_client(sync_client=True) as client:
                flow_run = client.read_flow_run(flow_run_id)
            assert flow_run.deployment_id == deployment_id and flow_run.state.is_scheduled()
            parameters = flow_run.parameters["config"]
            assert parameters["train"]["labels"] == "feedback" and parameters["train"]["detectors"] == ["iforest"]
        finally:
            with get_client(sync_client=True) as client:
                client.delete_deployment(deployment_id)

    # What that run does: train with the labels (the deployment's parameter, as the worker would run it).
    config = feedback_config(small_config())
    result = stages.train(config)
    with app.state.workbench.engine.connect() as connection:
        latest = pd.DataFrame(connection.execute(sa.select(LABELS)).mappings().all()).drop_duplicates(["batch", "row_id"], keep="last")
    decided = latest[latest["label"].isin(["anomaly", "normal"])]
    run = MlflowClient().get_run(result.run_id)
    assert run.data.params["feedback.n_labels"] == str(len(decided))
    assert run.data.params["feedback.n_anomalies"] == str((decided["label"] == "anomaly").sum())
    assert run.data.params["feedback.n_stale"] == "0"  # every label carries its row's values
    assert run.data.tags["feedback.batches"] == BATCH
    with app.state.workbench.engine.connect() as connection:
        retrains = connection.execute(sa.select(AUDIT.c.user).where(AUDIT.c.action == "retrain")).scalars().all()
    assert retrains == ["ada"]


def test_retrain_with_the_prefect_api_down_says_so():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # nothing listens on the discard port
        record = trigger_training(small_config())
    assert record["flow_run_id"] is None and "the Prefect API at http://127.0.0.1:9/api cannot be reached" in record["message"]


# A batch name scored again: the deployed flows score data/incoming/batch.csv every hour

def test_labels_stay_with_the_rows_they_were_given_on_when_the_batch_is_scored_again(app, project):
    config = load_config(project / "configs" / "demo.yaml")
    name = "hourly"
    source = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns="malignant")
    first = source.sample(30, random_state=2)
    first.to_csv(project / f"{name}.csv", index=False)
    monitoring.score_batch(config, f"{name}.csv")
    analyst = TestClient(app)
    csrf = log_in(analyst, "ann")

    def queue_labels() -> list[str]:
        return re.findall(r'<span class="label label-(\w+)"', analyst.get(f"/review?batch={name}").text)

    first_page = analyst.get(f"/review?batch={name}").text
    rows = re.findall(r'data-row="([^"]+)"', first_page)[:3]
    decisions = dict(zip(rows, ("anomaly", "normal", "anomaly")))
    for row, label in decisions.items():
        assert analyst.post("/label", data={"batch": name, "row": row, "label": label}, headers={"X-CSRF-Token": csrf}).status_code == 200
    assert sorted(queue_labels()) == sorted(decisions.values())
    assert "<li>none</li>" not in analyst.get(f"/row?batch={name}&row={rows[0]}").text
    seen = pd.read_parquet(batch_file(config, name))
    seen.index = row_ids(seen, config.data.id_column)

    # The next batch: other rows under the same ids (a source that numbers each file's rows from the same start).
    second = source.drop(first.index).sample(30, random_state=3).assign(sample_id=first["sample_id"].to_numpy())
    second.to_csv(project / f"{name}.csv", index=False)
    monitoring.score_batch(config, f"{name}.csv")
    assert queue_labels() == []
    assert "<li>none</li>" in analyst.get(f"/row?batch={name}&row={rows[0]}").text  # nor in the row's history

    # Training takes the rows the analyst saw, also once the scored file is gone.
    columns = list(config.data.columns)
    for _ in ("overwritten", "removed"):
        trained = feedback.labelled_rows(feedback_config(config))
        mine = trained[trained[feedback.BATCH_COLUMN] == name]
        pd.testing.assert_frame_equal(mine[columns].reset_index(drop=True), seen.loc[rows, columns].reset_index(drop=True), check_dtype=False)
        assert mine[feedback.LABEL_COLUMN].tolist() == [int(decisions[row] == "anomaly") for row in rows]
        batch_file(config, name).unlink(missing_ok=True)

    # A label sent from a page of the earlier version is refused rather than put on the new row.
    monitoring.score_batch(config, f"{name}.csv")
    version = re.search(r'"version": "([0-9a-f]{64})"', first_page).group(1)
    stale = analyst.post("/label", data={"batch": name, "row": rows[0], "label": "normal", "version": version}, headers={"X-CSRF-Token": csrf})
    assert stale.status_code == 409 and "reload" in stale.text


def test_the_reviewer_keeps_only_the_queues_used_last(project, monkeypatch):
    config = load_config(project / "configs" / "demo.yaml")
    monkeypatch.setattr(review, "QUEUES_KEPT", 1)
    reviewer = review.Reviewer(config)
    kept = reviewer.queue(BATCH)
    assert reviewer.queue(BATCH) is kept
    other = "copy"
    shutil.copy(batch_file(config, BATCH), batch_file(config, other))
    try:
        reviewer.queue(other)
        assert reviewer.queue(BATCH) is not kept  # dropped for the other batch's queue, so rebuilt
    finally:
        batch_file(config, other).unlink()
