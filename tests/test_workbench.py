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
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
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
from pynomaly_core.detectors.pu import KNOWN_NORMAL
from pynomaly_core.labels.feedback import LABELS, batch_file, database_url, row_ids
from pynomaly_core.labels.discovery import Discovery
from pynomaly_core.labels.review import member_scores, review_order
from pynomaly_core.data.preprocessing import features
from pynomaly_core.evaluation import explain
from pynomaly_core.stages import row_keys
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


def neighbours(project):
    """row id -> the batch's other row ids, nearest first in the champion's preprocessed feature space."""
    config = load_config(project / "configs" / "demo.yaml")
    frame = pd.read_parquet(batch_file(config, BATCH))
    python_model = load_model(f"models:/{config.registry.model_name}@champion").unwrap_python_model()
    X = python_model.pipeline[0].transform(features(frame, python_model.data_config))
    ids = row_ids(frame, config.data.id_column).tolist()

    def nearest(row: str) -> list[str]:
        distance = ((X - X[ids.index(row)]) ** 2).sum(axis=1)
        return [ids[i] for i in np.argsort(distance, kind="stable") if ids[i] != row]
    return nearest


def test_browser_label_by_keyboard_re_ranks_the_queue_in_place_and_log_out(project, server):
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
        page.evaluate("window.sameDocument = true")  # gone if the page reloads
        nearest = neighbours(project)

        def ranking() -> list[str]:
            """The whole queue as this browser session sees it, page after page."""
            found, number = [], 1
            while True:
                text = page.request.get(f"{server}/review/queue?batch={BATCH}&page={number}").text()
                found += re.findall(r'data-row="([^"]+)"', text)
                if 'id="next-page"' not in text:
                    return found
                number += 1

        def decide(key: str, text: str) -> str:
            """Label the selected row by keyboard and wait for the re-ranked queue; the row's id."""
            row = page.locator("#queue .queue-row.selected").get_attribute("data-row")
            page.keyboard.press(key)
            expect(page.locator(f"#reviewed tr[data-reviewed='{row}'] td.current")).to_have_text(text)
            expect(page.locator(f"#queue tr[data-row='{row}']")).to_have_count(0)
            expect(page.locator("#queue .queue-row").first).to_have_class(re.compile("selected"))
            return row

        def mean_rank(rows: list[str], queue: list[str], left_out: set[str]) -> float:
            queue = [r for r in queue if r not in left_out]
            return sum(queue.index(r) for r in rows) / len(rows)

        # Dismiss the first row (in the top 3 % of the batch, where AAD's constraint on a normal row bites):
        # the rows nearest it move down. Then confirm the 10th (below the top 3 %): its nearest rows move up.
        before = ranking()
        dismissed = before[0]
        near_dismissed = [r for r in nearest(dismissed) if r in before][:5]
        assert decide("d", "dismissed (normal)") == dismissed
        after = ranking()
        assert mean_rank(near_dismissed, after, {dismissed}) > mean_rank(near_dismissed, before, {dismissed})
        for _ in range(9):
            page.keyboard.press("j")
        confirmed = page.locator("#queue .queue-row.selected").get_attribute("data-row")
        assert confirmed == after[9]
        near_confirmed = [r for r in nearest(confirmed) if r in after][:5]
        assert decide("c", "confirmed anomaly") == confirmed
        moved = ranking()
        assert mean_rank(near_confirmed, moved, {confirmed}) < mean_rank(near_confirmed, after, {confirmed})
        assert page.locator("#queue .queue-row").first.get_attribute("data-row") == moved[0]
        page.keyboard.press("n")  # a note on the row now first, then unsure about it
        page.keyboard.type("borderline texture")
        page.keyboard.press("Escape")
        rows = [dismissed, confirmed, decide("u", "unsure")]
        assert page.evaluate("window.sameDocument === true")  # refreshed in place, never reloaded
        if shots:
            page.screenshot(path=shots / "review.png", full_page=True)
            page.click(f"tr[data-reviewed='{rows[0]}'] a")
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
    assert labels["label"].tolist() == ["normal", "anomaly", "unsure"]
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
    assert rejected.count("mean_radius") >= 3 and '<th>row</th><th class="reason">reason</th>' in rejected  # the reason first, then the values
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


def test_queue_is_the_discovery_order_given_the_labels_and_lime_explains_a_row_on_demand(app, project):
    client = TestClient(app)
    log_in(client, "vic")
    config = load_config(project / "configs" / "demo.yaml")
    frame = pd.read_parquet(batch_file(config, BATCH))
    ids = row_ids(frame, config.data.id_column).tolist()
    python_model = load_model(f"models:/{config.registry.model_name}@champion").unwrap_python_model()
    discovery = Discovery.fit(python_model.pipeline[0].transform(features(frame, python_model.data_config)), config.seed)
    # The rows labelled so far (in the browser test), taken in at once by this app: one update from the forest's ranking.
    labels = labels_in_db(app.state.workbench.engine).query("batch == @BATCH").drop_duplicates("row_id", keep="last")
    assert len(labels)
    decided = labels[labels["label"].isin(["anomaly", "normal"])]
    discovery.label({ids.index(r): int(label == "anomaly") for r, label in zip(decided["row_id"], decided["label"])})
    expected = [ids[p] for p in discovery.order() if ids[p] not in set(labels["row_id"])][:25]
    assert queue_rows(client) == expected
    # The named choice: the teach-the-model order (labels.review), reviewed rows left out as well.
    pipeline = python_model.pipeline
    teach = review_order(frame["score"].to_numpy(), member_scores(pipeline, features(frame, python_model.data_config)), float(pipeline[-1].threshold_))
    shown = re.findall(r'data-row="([^"]+)"', client.get("/review", params={"batch": BATCH, "order": "teach"}).text)
    assert shown == [ids[p] for p in teach if ids[p] not in set(labels["row_id"])][:25] != expected
    assert client.get("/review", params={"batch": BATCH, "order": "random"}).status_code == 422

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
    """Three times the limit of wrong passwords, all at once, as the login route runs them:
    exactly the limit is checked and audited, the rest are refused before any password check."""
    url = f"sqlite:///{tmp_path / 'workbench.db'}" if backend == "sqlite" else \
        f"postgresql+psycopg://postgres@127.0.0.1:5432/{request.getfixturevalue('scratch_database')}"
    migrate(url)
    engine = connect(url)
    with engine.begin() as connection:
        auth.add_user(connection, "tim", PASSWORD, "viewer")
    attempts = 3 * auth.MAX_FAILED_LOGINS
    together, outcomes = threading.Barrier(attempts), []

    def attempt(client: str):  # each from its own address: one address has one login at a time
        together.wait()
        try:
            auth.login(engine, "tim", "wrong password", client)
        except auth.AuthError as err:
            outcomes.append(type(err).__name__)

    threads = [threading.Thread(target=attempt, args=(f"10.0.0.{i}",)) for i in range(attempts)]
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
    with pytest.raises(auth.AuthError, match="wrong user name or password"):
        auth.login(engine, "nobody", PASSWORD, "test")
    assert checked == [auth._DUMMY_HASH]  # the same argon2 work as a known name's
    with engine.begin() as connection:
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


def test_a_model_not_logged_by_the_pipelines_experiment_is_neither_offered_nor_loaded(app, project):
    """Issue 27, 3: another MLflow user's model (its own experiment and run, its own @champion) never gets an API key
    from the form nor scores through the API."""
    config = load_config(project / "configs" / "demo.yaml")
    client = MlflowClient()
    champion = client.get_model_version_by_alias(config.registry.model_name, "champion")
    rogue_experiment = client.create_experiment("someone-elses")
    run = client.create_run(rogue_experiment)
    client.create_registered_model("wine-detector")
    version = client.create_model_version("wine-detector", champion.source, run_id=run.info.run_id)  # a working pyfunc model
    client.set_registered_model_alias("wine-detector", "champion", version.version)
    admin = TestClient(app)
    csrf = log_in(admin, "ada")
    assert "<option>wine-detector</option>" not in admin.get("/admin").text
    assert "<option>breast-cancer-detector</option>" in admin.get("/admin").text
    key = re.search(r'id="new-key">([^<]+)<', admin.post("/admin/keys", data={"model": "wine-detector", "csrf_token": csrf}).text).group(1)
    rows = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns="malignant").head(2).to_dict("records")
    refused = TestClient(app).post("/api/v1/score", json={"rows": rows}, headers={"X-API-Key": key})
    assert refused.status_code == 404 and "not logged by a run of the pipeline's experiment" in refused.json()["detail"]


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
    # Two of the labelled rows are test rows of the training split (the demo batch is drawn from the training table).
    config = load_config(project / "configs" / "demo.yaml")
    batch = pd.read_parquet(batch_file(config, BATCH))
    test_keys = set(row_keys(pd.read_parquet(config.paths.test), config))
    on_test = row_keys(batch, config).isin(test_keys).to_numpy()
    ids = row_ids(batch, config.data.id_column)
    rows = [*ids[on_test][:2], *ids[~on_test][:2]]
    for row, label in zip(rows, ("anomaly", "normal", "anomaly", "normal")):
        assert analyst.post("/label", data={"batch": BATCH, "row": row, "label": label}, headers={"X-CSRF-Token": analyst_csrf}).status_code == 200

    with prefect_harness():
        deployment_id = training_flow.to_deployment(name="training").apply()
        try:
            response = admin.post("/admin/retrain", data={"csrf_token": csrf}, follow_redirects=False)
            assert response.status_code == 303
            assert response.headers["location"] == "/admin?done=retrain"  # the message by code; the run on /admin/retrain
            state = admin.get("/admin/retrain").text  # the admin page's list of retrainings
            assert 'data-state="scheduled"' in state
            flow_run_id = re.search(r"\(([0-9a-f-]{36})\)", state).group(1)
            with get_client(sync_client=True) as client:
                flow_run = client.read_flow_run(flow_run_id)
            assert flow_run.deployment_id == deployment_id and flow_run.state.is_scheduled()
            parameters = flow_run.parameters["config"]
            assert parameters["train"]["labels"] == "feedback" and parameters["train"]["detectors"] == ["iforest"]
        finally:
            with get_client(sync_client=True) as client:
                client.delete_deployment(deployment_id)

    # What that run does: train with the labels (the deployment's parameter, as the worker would run it).
    result = stages.train(feedback_config(small_config()))
    with app.state.workbench.engine.connect() as connection:
        latest = pd.DataFrame(connection.execute(sa.select(LABELS)).mappings().all()).drop_duplicates(["batch", "row_id"], keep="last")
    decided = latest[latest["label"].isin(["anomaly", "normal"])]
    run = MlflowClient().get_run(result.run_id)
    # No labelled row is both trained on and evaluated: those that are test rows stay evaluation rows, and are counted.
    held_out = decided["row_id"].isin(ids[on_test])
    assert held_out.sum() >= 2
    assert run.data.params["feedback.n_labels"] == str(len(decided) - held_out.sum())
    assert run.data.params["feedback.n_held_out"] == str(held_out.sum())
    assert result.n_labels == len(decided) - held_out.sum() and result.n_labels_held_out == held_out.sum()
    assert run.data.params["feedback.n_anomalies"] == str((decided[~held_out]["label"] == "anomaly").sum())
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
        assert mine[feedback.LABEL_COLUMN].tolist() == [1 if decisions[row] == "anomaly" else KNOWN_NORMAL for row in rows]
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


def test_a_warmed_up_workbench_sets_up_the_champions_explainer_once_before_its_first_page(project, monkeypatch):
    """`pynomaly ui` (create_app's warm_up) loads the champion and sets up its SHAP explainer before it answers; every
    page's SHAP column then uses that one, and gets what an explainer set up for the call gives."""
    config = load_config(project / "configs" / "demo.yaml")
    real, set_up = explain.ShapExplainer, []

    def counted(*args):
        set_up.append(real(*args))
        return set_up[-1]

    def of_models():  # not the made-up problem on which the permutation explainer's masking compiles, in the background
        return [explainer for explainer in set_up if hasattr(explainer.detector, "threshold_")]

    monkeypatch.setattr(explain, "ShapExplainer", counted)
    app = create_app(config, warm_up=True)
    assert len(of_models()) == 1  # the project's rank ensemble of IForest trials: the permutation explainer
    client = TestClient(app)
    log_in(client, "vic")
    for page in (1, 2):
        cells = client.get("/review/shap", params={"batch": BATCH, "page": page})
        assert cells.status_code == 200 and 'class="feature"' in cells.text
    assert len(of_models()) == 1
    reviewer = app.state.workbench.reviewer
    queue = reviewer.queue(BATCH)
    positions = [int(p) for p in queue.ranking()[:25]]
    python_model = reviewer.model(queue.model_uri).unwrap_python_model()
    rows = python_model.pipeline[0].transform(features(queue.frame.iloc[positions], python_model.data_config))
    fresh = real(python_model.pipeline[-1], of_models()[0].background, of_models()[0].feature_names)(rows).values
    assert np.array_equal(reviewer.shap_values(queue, positions), fresh)
    # Without a champion there is nothing to set up, and the workbench starts all the same.
    nobody = config.model_copy(update={"registry": config.registry.model_copy(update={"model_name": "nobody"})})
    create_app(nobody, warm_up=True)
    assert len(of_models()) == 1


# Triage: the queue's filters, search and progress; error pages; links; the API's row ids

def test_queue_filters_search_sort_and_progress(app, project):
    client = TestClient(app)
    csrf = log_in(client, "ann")
    config = load_config(project / "configs" / "demo.yaml")
    frame = pd.read_parquet(batch_file(config, BATCH))
    ids = row_ids(frame, config.data.id_column)
    flagged = set(ids[frame["is_anomaly"] == 1])

    def shown(**params) -> list[str]:
        return re.findall(r'data-row="([^"]+)"', client.get("/review", params={"batch": BATCH, **params}).text)

    def progress() -> tuple[int, int]:
        found = re.search(r"(\d+) of (\d+) flagged rows reviewed", client.get("/review", params={"batch": BATCH}).text)
        return int(found.group(1)), int(found.group(2))

    def reviewed() -> set[str]:
        return set(re.findall(r'data-reviewed="([^"]+)"', client.get("/review", params={"batch": BATCH}).text))

    assert set(shown(flagged="1")) == flagged - reviewed() and len(flagged) > 0  # the flagged rows still to review: fewer than a page
    by_score = shown(sort="score")
    done = reviewed()
    still_to_review = [row for row in ids.iloc[frame["score"].sort_values(ascending=False, kind="stable").index] if row not in done]
    assert by_score == still_to_review[:25]
    before, n_flagged = progress()
    assert n_flagged == len(flagged)
    target = next(row for row in shown(flagged="1"))
    assert client.post("/label", data={"batch": BATCH, "row": target, "label": "normal"}, headers={"X-CSRF-Token": csrf}).status_code == 200
    assert progress() == (before + 1, n_flagged)
    assert target not in shown(flagged="1") and target in shown(label="normal")
    assert all(row in shown(label="normal") for row in [target])
    assert shown(q=target) == [target]  # search by id
    assert "No row matches this view" in client.get("/review", params={"batch": BATCH, "q": "no such id"}).text
    assert client.get("/review", params={"batch": BATCH, "sort": "random"}).status_code == 422


def test_errors_are_workbench_pages_for_a_browser_and_json_for_the_api(app):
    browser = TestClient(app, headers={"Accept": "text/html,application/xhtml+xml"})
    log_in(browser, "vic")
    missing = browser.get("/review", params={"batch": "no-such-batch"})
    assert missing.status_code == 404 and "<header>" in missing.text and "Not found" in missing.text and "no scored batch no-such-batch" in missing.text
    forbidden = browser.get("/admin")
    assert forbidden.status_code == 403 and "Not allowed" in forbidden.text and "vic is a viewer" in forbidden.text
    assert browser.get("/no/such/page").status_code == 404 and "<header>" in browser.get("/no/such/page").text
    api = TestClient(app)
    assert api.post("/api/v1/score", content=b"{}", headers={"Accept": "text/html", "X-API-Key": "x"}).json()["detail"]  # JSON whatever it accepts


def test_mlflow_and_prefect_links_only_where_a_ui_answers(project, monkeypatch):
    monkeypatch.delenv("PYNOMALY_PREFECT_UI", raising=False)
    monkeypatch.delenv("PYNOMALY_MLFLOW_UI", raising=False)
    config = load_config(project / "configs" / "demo.yaml")
    config.monitoring.mlflow_ui = "http://127.0.0.1:9"  # nothing answers on the discard port
    client = TestClient(create_app(config, prefect_ui=None))
    log_in(client, "vic")
    models = client.get("/models").text
    assert "MLflow version" not in models and "mlflow ui --backend-store-uri" in models
    with serving(project, "ui", "/healthz") as other:  # any server answering: here another workbench, as the MLflow UI
        config.monitoring.mlflow_ui = other
        linked = TestClient(create_app(config, prefect_ui="http://prefect.example:4200"))  # configured: linked without asking
        log_in(linked, "vic")
        models = linked.get("/models").text
    assert f'href="{other}/#/models/' in models and 'href="http://prefect.example:4200/runs"' in models


def test_detectors_page_says_what_cannot_run_here_and_what_to_install(app, monkeypatch):
    from pynomaly_core.detectors import packages

    client = TestClient(app)
    log_in(client, "vic")
    real = packages.missing
    monkeypatch.setattr(packages, "missing", lambda names: [n for n in names if n == "torch"] or real(names))  # as without torch
    page = client.get("/detectors").text
    torch_rows = [d for d in catalog.detectors() if "torch" in d["python_dependencies"]]
    assert torch_rows and all(d["missing"] == ["torch"] for d in torch_rows)
    assert f"{len([d for d in catalog.detectors() if d['missing']])} of {len(catalog.detectors())} detectors cannot run" in page
    assert "pip install &#39;pynomaly[torch]&#39;" in page or "pip install 'pynomaly[torch]'" in html.unescape(page)


def test_scoring_api_echoes_each_rows_id(app):
    admin = TestClient(app)
    csrf = log_in(admin, "ada")
    key = re.search(r'id="new-key">([^<]+)<', admin.post("/admin/keys", data={"model": "breast-cancer-detector", "csrf_token": csrf}).text).group(1)
    rows = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns="malignant").sample(4, random_state=5)
    answer = TestClient(app).post("/api/v1/score", json={"rows": rows.to_dict("records")}, headers={"X-API-Key": key}).json()
    assert answer["id_column"] == "sample_id" and answer["ids"] == rows["sample_id"].tolist() and len(answer["score"]) == 4
    without_ids = TestClient(app).post("/api/v1/score", json={"rows": rows.drop(columns="sample_id").to_dict("records")}, headers={"X-API-Key": key}).json()
    assert without_ids["id_column"] is None and without_ids["ids"] == [1, 2, 3, 4]


# Drift you can see, the installable app

def _browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True)


def _log_in(page, server: str, name: str) -> None:
    page.goto(f"{server}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/batches")


STRICT_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'"


def test_browser_drift_page_draws_its_charts_under_a_strict_csp(project, server):
    """The batch's drift page and the trend: every chart drawn by the vendored Vega (an <svg> in its place), with no
    script evaluated from strings and no inline style (the CSP below, added to every response, forbids both)."""
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ["PYNOMALY_SCREENSHOTS"]) if os.environ.get("PYNOMALY_SCREENSHOTS") else None
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        violations = []
        page.on("console", lambda message: violations.append(f"{message.text} ({message.location})") if "Content Security Policy" in message.text else None)

        def with_csp(route):
            response = route.fetch(max_redirects=0)  # a redirect goes back to the browser, which follows it
            route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_CSP})

        page.route("**/*", with_csp)
        _log_in(page, server, "vic")
        page.click(f"#batches tr:has(a:text-is('{BATCH}')) a:text-is('charts')")
        expect(page.locator("#verdict h2")).to_contain_text("drift")
        charts = page.locator(".chart")
        assert charts.count() >= 3  # at least one column, the scores, the alert rate
        for i in range(charts.count()):
            expect(charts.nth(i)).to_have_attribute("data-rendered", "true", timeout=30_000)
            expect(charts.nth(i).locator("svg")).to_have_count(1)
        assert page.locator("#scores svg .mark-rule.role-mark").count() == 1  # the threshold (not the axes' ticks)
        rule = page.locator("#verdict .rule li")
        assert rule.count() == 3 and "K-S" in rule.first.inner_text()
        if shots:
            page.screenshot(path=shots / "drift.png", full_page=True)
        page.click("a:text-is('Trend across batches')")
        expect(page.locator("#trend")).to_have_attribute("data-rendered", "true", timeout=30_000)
        expect(page.locator("#history tbody tr").first).to_contain_text(BATCH)
        if shots:
            page.screenshot(path=shots / "trend.png", full_page=True)
        browser.close()
    assert violations == []


def test_browser_installs_as_an_app_and_shows_the_offline_page(project, server):
    from playwright.sync_api import expect, sync_playwright

    manifest = json.loads(urllib.request.urlopen(f"{server}/static/manifest.webmanifest").read())
    assert {icon["sizes"] for icon in manifest["icons"]} == {"192x192", "512x512"} and manifest["display"] == "standalone"
    shots = Path(os.environ["PYNOMALY_SCREENSHOTS"]) if os.environ.get("PYNOMALY_SCREENSHOTS") else None
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        context = browser.new_context(viewport={"width": 1000, "height": 700})
        page = context.new_page()
        _log_in(page, server, "vic")
        page.evaluate("navigator.serviceWorker.ready")
        page.reload()  # now controlled by the worker
        assert page.evaluate("navigator.serviceWorker.controller !== null")
        for icon in manifest["icons"]:
            assert page.request.get(f"{server}{icon['src']}").headers["content-type"] == "image/png"
        cached = page.evaluate("caches.open('pynomaly-static-v1').then(c => c.keys()).then(keys => keys.map(k => new URL(k.url).pathname))")
        assert {"/static/offline.html", "/static/workbench.css", "/static/htmx.min.js", "/static/vega/vega.min.js"} <= set(cached)
        context.set_offline(True)
        page.goto(f"{server}/models")
        expect(page.locator("#offline h1")).to_have_text("You are offline")
        expect(page.locator("header")).to_have_css("background-color", "rgb(29, 35, 48)")  # its stylesheet, from the cache
        if shots:
            page.screenshot(path=shots / "offline.png")
        context.set_offline(False)
        page.goto(f"{server}/models")
        expect(page.locator("h1")).to_have_text("Registered models")
        browser.close()


# The label loop on one machine (last: it registers a new version and makes it the champion)

def test_browser_retrain_on_the_embedded_default_and_a_batch_keeps_the_model_that_scored_it(project, server):
    """The admin's button with no Prefect API configured runs the training flow in the workbench's background and shows
    the new version; the batch scored before is still read with its own version (scores, labels, explanations), in the
    running workbench and in a fresh one, after the new version has become the champion."""
    from playwright.sync_api import expect, sync_playwright

    config = load_config(project / "configs" / "demo.yaml")
    name = config.registry.model_name
    registry = MlflowClient()
    first = registry.get_model_version_by_alias(name, "champion").version
    scored = pd.read_parquet(batch_file(config, BATCH))
    scored.index = row_ids(scored, config.data.id_column)
    shots = Path(os.environ["PYNOMALY_SCREENSHOTS"]) if os.environ.get("PYNOMALY_SCREENSHOTS") else None
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        _log_in(page, server, "ada")
        page.goto(f"{server}/review?batch={BATCH}")
        labelled_before = page.locator("#reviewed td.current .label").count()
        assert labelled_before > 0  # earlier tests labelled rows of this batch

        page.goto(f"{server}/admin")
        page.click("#retrain")
        run = page.locator("#retrain-runs .retrain-run").first
        expect(run).to_have_attribute("data-state", "running")
        expect(page.locator("#retrain")).to_be_disabled()
        expect(run).to_have_attribute("data-state", "completed", timeout=900_000)  # polled by the page; a fresh Prefect and a training
        version = run.locator(".version").get_attribute("data-version")
        assert int(version) == int(first) + 1 and f"v{version} registered" in run.inner_text()
        if shots:
            page.screenshot(path=shots / "admin-retrained.png", full_page=True)

        registry.set_registered_model_alias(name, "champion", version)  # promoted, whatever the gate said
        page.goto(f"{server}/review?batch={BATCH}")
        expect(page.locator("#scored-by")).to_contain_text(f"models:/{name}/{first}")
        expect(page.locator("#queue .shap .feature").first).to_be_visible(timeout=60_000)
        assert page.locator("#reviewed td.current .label").count() == labelled_before  # the labels stay with the batch
        first_row = page.locator("#queue .queue-row").first
        shown_score = float(first_row.locator("td.score").inner_text().split()[0])
        assert shown_score == pytest.approx(scored.loc[first_row.get_attribute("data-row"), "score"], abs=5e-5)
        assert re.fullmatch(r"\(\d+\.\d %\)", first_row.locator(".percentile").inner_text())
        browser.close()

    fresh = review.Reviewer(config)  # a workbench started now
    assert fresh.queue(BATCH).model_uri == f"models:/{name}/{first}"
    pd.read_csv(project / f"{BATCH}.csv").tail(60).to_csv(project / "after.csv", index=False)
    monitoring.score_batch(config, "after.csv")
    assert fresh.queue("after").model_uri == f"models:/{name}/{version}"  # a batch scored now: the new champion
