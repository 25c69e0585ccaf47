"""The analysts' workbench: FastAPI routes rendering Jinja2 templates, HTMX for partial updates.

Every page needs a session (cookie: HttpOnly, SameSite=Lax); every form and HTMX post carries the
session's CSRF token; viewers read, analysts label, admins retrain and manage users and keys.
`POST /api/v1/score` takes an API key instead and runs `pynomaly score`'s validation and scoring.
"""


import json
import os
import secrets
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

import pandas as pd
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pynomaly_core import drift as drift_rules
from pynomaly_core import notify, tracking
from pynomaly_core.config import PipelineConfig
from pynomaly_core.feedback import ANOMALY, LABELS, NORMAL, UNSURE, database_url, label_history, latest_labels, row_values
from pynomaly_core.io import DataError
from pynomaly_core.monitoring import champion_version_uri
from pynomaly_core.scoring import score_frame
from pynomaly_core.validation import ERRORS_COLUMN, ROW_COLUMN

from . import auth, catalog, charts
from .db import API_KEYS, AUDIT, ROLES, USERS, audit, connect, migrate
from .links import ServiceLink
from .metrics import Metrics
from .retrain import Retrainer
from .review import Reviewer, View

HERE = Path(__file__).parent
SESSION_COOKIE, LOGIN_CSRF_COOKIE = "pynomaly_session", "pynomaly_login_csrf"
PAGE_SIZE = 25
LABEL_NAMES = {ANOMALY: "confirmed anomaly", NORMAL: "dismissed (normal)", UNSURE: "unsure"}
ERROR_TITLES = {400: "Bad request", 401: "Not logged in", 403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Cannot use that input"}
ALIAS_SECONDS = 10  # how long the API trusts a resolved @champion before asking MLflow again


class NeedsLogin(Exception):
    pass


def create_app(cfg: PipelineConfig, db_url: str | None = None, prefect_ui: str | None = None, secure_cookies: bool = False) -> FastAPI:
    db_url = db_url or database_url(cfg)
    migrate(db_url)
    # Point MLflow at the store without creating the experiment: the workbench reads as the read-only
    # user, and an experiment it created would be closed to the pipeline's runs.
    tracking.use_store(tracking.absolute_sqlite(tracking.tracking_uri(cfg.tracking)))
    engine = connect(db_url)
    reviewer = Reviewer(cfg)
    retrainer = Retrainer(cfg, db_url)
    metrics = Metrics()
    templates = Jinja2Templates(directory=HERE / "templates")
    store = tracking.tracking_uri(cfg.tracking)
    # Configured: a tracking server (its UI is the same address) or PYNOMALY_MLFLOW_UI; else monitoring.mlflow_ui when it answers.
    configured_mlflow = os.environ.get("PYNOMALY_MLFLOW_UI") or (store if store.startswith(("http://", "https://")) else None)
    mlflow_link = ServiceLink(configured_mlflow or notify.mlflow_ui_url(cfg), bool(configured_mlflow), tracking.browse_command(store))
    configured_prefect = prefect_ui or os.environ.get("PYNOMALY_PREFECT_UI")
    prefect_link = ServiceLink(configured_prefect or "http://127.0.0.1:4200", bool(configured_prefect), "prefect server start (or make services)")
    champions: dict[str, tuple[float, str]] = {}

    app = FastAPI(title="Pynomaly workbench", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(request.method, route, response.status_code).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(NeedsLogin)
    async def to_login(request: Request, _):
        if request.headers.get("HX-Request"):  # HTMX follows this header, not a redirect
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(DataError)
    async def data_error(request: Request, err: DataError):
        return error_page(request, 404, str(err))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return error_page(request, err.status_code, str(err.detail), getattr(err, "headers", None))

    def error_page(request: Request, status: int, detail: str, headers: dict | None = None) -> Response:
        """A browser gets a workbench page, HTMX a fragment it shows in place, anything else (the API, scripts) JSON."""
        if request.headers.get("HX-Request"):
            return HTMLResponse(f"<span class='error'>{_escape(detail)}</span>", status_code=status, headers=headers)
        if "text/html" not in request.headers.get("accept", "") or request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=status, headers=headers)
        try:
            user = session(request)[0]
        except NeedsLogin:
            user = None
        response = page(request, "error.html", user, status=status, title=ERROR_TITLES.get(status, "Error"), detail=detail)
        response.status_code = status
        return response

    def client_of(request: Request) -> str:
        return request.client.host if request.client else ""

    def session(request: Request) -> tuple[auth.User, str]:
        with engine.connect() as connection:
            found = auth.session_user(connection, request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise NeedsLogin
        return found

    def role(needed: str, post: bool = False):
        """A dependency: the session's user, who must hold `needed`; for a post, the CSRF token must match."""
        async def check(request: Request, found: Annotated[tuple, Depends(session)]) -> auth.User:
            user, csrf = found
            if post:
                given = request.headers.get("X-CSRF-Token") or (await request.form()).get("csrf_token")
                if not auth.csrf_matches(csrf, given):
                    raise HTTPException(403, "missing or wrong CSRF token")
            if not user.can(needed):
                raise HTTPException(403, f"{user.name} is a {user.role}; this needs the {needed} role")
            return user
        return check

    def page(request: Request, name: str, user: auth.User | None, **context) -> HTMLResponse:
        csrf = None
        if user is not None:
            csrf = session(request)[1]
        return templates.TemplateResponse(request, name, {"user": user, "csrf": csrf, "mlflow_ui": mlflow_link.address(), "prefect_ui": prefect_link.address(),
                                                          "mlflow_hint": mlflow_link.start_hint, "prefect_hint": prefect_link.start_hint, **context})

    # --- sessions -------------------------------------------------------------------------------

    @app.get("/login")
    def login_form(request: Request, error: str | None = None):
        token = secrets.token_urlsafe(32)
        response = page(request, "login.html", None, login_csrf=token, error=error)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies)
        return response

    # bandit B107 takes csrf_token's default for a password: "" is a missing token, which is refused.
    @app.post("/login")
    def login(request: Request, name: Annotated[str, Form()], password: Annotated[str, Form()], csrf_token: Annotated[str, Form()] = ""):  # nosec B107
        # The login form has no session yet: its token is checked against a cookie (double submit).
        if not auth.csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE, ""), csrf_token):
            raise HTTPException(403, "missing or wrong CSRF token")
        with engine.begin() as connection:  # a failure is caught inside, so its audit entry is committed
            try:
                token, _ = auth.login(connection, name, password, client_of(request))
            except auth.AuthError as err:
                return _login_again(request, str(err), 429 if isinstance(err, auth.TooManyAttempts) else 401)
        response = RedirectResponse("/batches", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=secure_cookies, max_age=auth.SESSION_HOURS * 3600)
        response.delete_cookie(LOGIN_CSRF_COOKIE)
        return response

    def _login_again(request: Request, error: str, status: int) -> HTMLResponse:
        response = login_form(request, error)
        response.status_code = status
        return response

    @app.post("/logout")
    def logout(request: Request, user: Annotated[auth.User, Depends(role("viewer", post=True))]):
        with engine.begin() as connection:
            auth.logout(connection, request.cookies[SESSION_COOKIE])
            audit(connection, user.name, "logout", client=client_of(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # --- pages ----------------------------------------------------------------------------------

    @app.get("/")
    def home():
        return RedirectResponse("/batches", status_code=303)

    @app.get("/models")
    def models(request: Request, user: Annotated[auth.User, Depends(role("viewer"))]):
        return page(request, "models.html", user, versions=catalog.model_versions(cfg))

    @app.get("/batches")
    def batches(request: Request, user: Annotated[auth.User, Depends(role("viewer"))]):
        return page(request, "batches.html", user, batches=catalog.batches(cfg))

    @app.get("/batches/rejected")
    def rejected(request: Request, user: Annotated[auth.User, Depends(role("viewer"))], batch: str):
        path = catalog.rejected_file(cfg, batch)
        if not catalog.inside_scored_dir(cfg, path) or not path.exists():
            raise DataError(f"batch {batch} has no rejected rows")
        frame = pd.concat([pd.read_csv(part, nrows=1000, dtype=str, keep_default_na=False) for part in catalog.rejected_parts(path)]).head(1000)
        values = [c for c in frame.columns if c not in (ROW_COLUMN, ERRORS_COLUMN)]
        return page(request, "rejected.html", user, batch=batch, rows=frame, shown=len(frame), values=values, row_column=ROW_COLUMN,
                    errors_column=ERRORS_COLUMN)

    @app.get("/batches/drift")
    def drift_report(batch: str, user: Annotated[auth.User, Depends(role("viewer"))]):
        path = Path(cfg.monitoring.scored_dir) / f"{batch}.drift.html"
        if not catalog.inside_scored_dir(cfg, path) or not path.exists():
            raise DataError(f"batch {batch} has no drift report")
        return FileResponse(path, media_type="text/html")

    @app.get("/drift")
    def drift_page(request: Request, user: Annotated[auth.User, Depends(role("viewer"))], batch: str):
        """The batch against its model's reference: drifted columns, scores and alert rate as charts, and the verdict's rule."""
        queue = reviewer.queue(batch)  # the batch with the model that scored it
        judged = catalog.verdict(cfg, batch)
        if judged is None:
            raise DataError(f"batch {batch} has not been judged for drift: pynomaly monitor --batch FILE judges a batch")
        reference = reviewer.reference(queue.model_uri)
        p_values = judged["feature_p_values"]
        # The drifted columns; when none drifted, the three nearest to drifting, so the page still shows where to look.
        shown = judged["drifted_columns"] or sorted(p_values, key=p_values.get)[:3]
        specs = {}
        for i, column in enumerate(shown):
            chart = charts.distribution if pd.api.types.is_numeric_dtype(reference[column]) else charts.categories
            specs[f"column-{i}"] = chart(reference[column], queue.frame[column], f"{column} (K-S p = {p_values[column]:.2g})")
        specs["scores"] = charts.distribution(reference["score"], queue.frame["score"], "score", threshold=queue.threshold)
        alerts = judged["alert_rate"]
        band = charts.alert_band(alerts["n_alerts"], alerts["n_rows"], alerts["expected"], cfg.monitoring.alert_rate_alpha)
        specs["alert-rate"] = charts.alert_rate(alerts["observed"], alerts["expected"], band)
        return page(request, "drift.html", user, queue=queue, judged=judged, shown=shown, specs=specs, band=band,
                    rule=drift_rules.rule(cfg.monitoring, len(p_values) or len(cfg.data.columns)),
                    report=(Path(cfg.monitoring.scored_dir) / f"{batch}.drift.html").exists())

    @app.get("/drift/trend")
    def drift_trend(request: Request, user: Annotated[auth.User, Depends(role("viewer"))]):
        """Alert rate and drift share of every judged batch over time, per model version."""
        history = catalog.monitoring_history(cfg)
        spec = None
        if len(history):
            bands = [charts.alert_band(round(r.alert_rate * r.n_rows), r.n_rows, r.expected, cfg.monitoring.alert_rate_alpha)
                     if r.expected == r.expected else (float("nan"), float("nan")) for r in history.itertuples()]
            spec = charts.trend(history.assign(band_low=[b[0] for b in bands], band_high=[b[1] for b in bands]))
        return page(request, "trend.html", user, history=history, specs={"trend": spec} if spec else {})

    def view_of(flagged: bool, unlabelled: bool, label: str, sort: str, q: str) -> View:
        if label and label not in LABEL_NAMES:
            raise HTTPException(422, f"label must be one of {', '.join(LABEL_NAMES)}, not {label!r}")
        if sort not in ("queue", "score"):
            raise HTTPException(422, f"sort must be queue or score, not {sort!r}")
        return View(flagged, unlabelled, label, sort, q.strip()[:200])

    def queue_labels(queue) -> pd.DataFrame:
        with engine.connect() as connection:
            return latest_labels(connection, queue.model_name, queue.batch_id, queue.version).set_index("row_id")

    @app.get("/review")
    def review(request: Request, user: Annotated[auth.User, Depends(role("viewer"))], batch: str, page_number: Annotated[int, Query(alias="page", ge=1)] = 1,
               flagged: bool = False, unlabelled: bool = False, label: str = "", sort: str = "queue", q: str = ""):
        view = view_of(flagged, unlabelled, label, sort, q)
        queue = reviewer.queue(batch)
        labels = queue_labels(queue)
        shown = queue.select(labels["label"], view)
        rows = queue.page(page_number, PAGE_SIZE, shown)
        n_pages = max(1, -(-len(shown) // PAGE_SIZE))
        return page(request, "review.html", user, queue=queue, rows=rows, labels=labels, page_number=page_number, n_pages=n_pages,
                    id_column=cfg.data.id_column, label_names=LABEL_NAMES, view=view, n_shown=len(shown), progress=queue.progress(labels["label"]),
                    page_size=PAGE_SIZE)

    @app.get("/review/shap")
    def review_shap(request: Request, user: Annotated[auth.User, Depends(role("viewer"))], batch: str, page_number: Annotated[int, Query(alias="page", ge=1)] = 1,
                    flagged: bool = False, unlabelled: bool = False, label: str = "", sort: str = "queue", q: str = ""):
        """The page's top SHAP features, filled in after the page itself has rendered."""
        queue = reviewer.queue(batch)
        shown = queue.select(queue_labels(queue)["label"], view_of(flagged, unlabelled, label, sort, q))
        try:
            explained = reviewer.explain(queue, queue.page(page_number, PAGE_SIZE, shown)["position"].to_numpy())
        except DataError as err:
            return HTMLResponse(f"<template>{_escape(str(err))}</template>")
        return page(request, "shap_cells.html", user, explained=explained)

    @app.get("/row")
    def row(request: Request, user: Annotated[auth.User, Depends(role("viewer"))], batch: str, row: str):
        queue = reviewer.queue(batch)
        position = queue.position(row)
        with engine.connect() as connection:
            history = queue.version.labels(label_history(connection, queue.model_name, batch, row)).to_dict("records")
        try:
            shap_values = dict(zip(reviewer.feature_names(queue), reviewer.shap_values(queue, [position])[0]))
        except DataError:
            shap_values = {}
        return page(request, "row.html", user, queue=queue, row_id=row, position=position, score=float(queue.frame["score"].iloc[position]),
                    percentile=float(queue.percentile([position])[0]),
                    table=reviewer.row_against_reference(queue, position), shap=shap_values, history=history, label_names=LABEL_NAMES)

    @app.get("/row/lime")
    def row_lime(request: Request, user: Annotated[auth.User, Depends(role("viewer"))], batch: str, row: str):
        queue = reviewer.queue(batch)
        try:
            weights = reviewer.lime(queue, queue.position(row))
        except ImportError:  # lime is in the `explain` extra only
            return HTMLResponse("<p class='error'>Explaining with LIME needs the lime package: pip install 'pynomaly[explain]'</p>")
        return page(request, "lime_cells.html", user, weights=weights)

    @app.post("/label")
    def label(request: Request, user: Annotated[auth.User, Depends(role("analyst", post=True))], batch: Annotated[str, Form()],
              row: Annotated[str, Form()], label: Annotated[str, Form()], note: Annotated[str, Form()] = "", version: Annotated[str, Form()] = ""):
        if label not in LABEL_NAMES:
            raise HTTPException(422, f"label must be one of {', '.join(LABEL_NAMES)}, not {label!r}")
        queue = reviewer.queue(batch)
        if version and version != queue.version.fingerprint:  # the page showed rows the batch no longer holds
            raise HTTPException(409, f"batch {batch} was scored again since this page was loaded: reload it and label its new rows")
        position = queue.position(row)
        with engine.begin() as connection:
            connection.execute(LABELS.insert().values(
                model_name=queue.model_name, model_version=queue.model_version, batch=batch, row_id=row, label=label, note=note[:2000], user=user.name,
                batch_version=queue.version.fingerprint, row_values=row_values(queue.frame.iloc[position], cfg.data.columns)))
            audit(connection, user.name, "label", f"{batch} row {row}: {label}" + (f" ({note[:200]})" if note else ""), client_of(request))
        metrics.labels.labels(label).inc()
        return HTMLResponse(f'<span class="label label-{label}" title="by {_escape(user.name)}">{LABEL_NAMES[label]}</span>')

    @app.get("/detectors")
    def detectors(request: Request, user: Annotated[auth.User, Depends(role("viewer"))], q: str = "", backend: str = "", input: str = "", gpu: str = ""):
        rows = catalog.detectors(q, backend=backend, input=input, gpu=gpu)
        template = "detector_rows.html" if request.headers.get("HX-Request") else "detectors.html"
        everything = catalog.detectors()
        cannot_run = [d for d in everything if d["missing"]]
        by_hint: dict[str, list[str]] = {}
        for d in cannot_run:
            by_hint.setdefault(d["install"], []).append(d["name"])
        return page(request, template, user, detectors=rows, q=q, backend=backend, input=input, gpu=gpu, cannot_run=cannot_run,
                    cannot_run_by_hint=by_hint, n_detectors=len(everything),
                    backends=sorted({d["backend"] for d in everything}), inputs=sorted({d["input"] for d in everything}))

    # --- administration -------------------------------------------------------------------------

    @app.get("/admin")
    def admin(request: Request, user: Annotated[auth.User, Depends(role("admin"))], new_key: str | None = None, message: str | None = None):
        with engine.connect() as connection:
            users = connection.execute(sa.select(USERS.c.name, USERS.c.role, USERS.c.created_at).order_by(USERS.c.name)).all()
            keys = connection.execute(sa.select(API_KEYS).order_by(API_KEYS.c.id.desc())).mappings().all()
            log = connection.execute(sa.select(AUDIT).order_by(AUDIT.c.id.desc()).limit(50)).mappings().all()
        models = sorted({v.name for v in catalog.model_versions(cfg)})
        return page(request, "admin.html", user, users=users, keys=keys, log=log, roles=ROLES, models=models, new_key=new_key, message=message,
                    retrainer=retrainer)

    @app.post("/admin/users")
    def add_user(request: Request, user: Annotated[auth.User, Depends(role("admin", post=True))], name: Annotated[str, Form()],
                 password: Annotated[str, Form()], new_role: Annotated[str, Form(alias="role")]):
        try:
            with engine.begin() as connection:
                auth.add_user(connection, name, password, new_role)
                audit(connection, user.name, "user_added", f"{name} ({new_role})", client_of(request))
        except auth.AuthError as err:
            raise HTTPException(422, str(err)) from None
        return RedirectResponse("/admin?" + urlencode({"message": f"added {name} ({new_role})"}), status_code=303)

    @app.post("/admin/keys")
    def add_key(request: Request, user: Annotated[auth.User, Depends(role("admin", post=True))], model: Annotated[str, Form()]):
        with engine.begin() as connection:
            key = auth.create_api_key(connection, model, user.name)
            audit(connection, user.name, "api_key_created", f"{key[:12]}... for {model}", client_of(request))
        return admin(request, user, new_key=key)  # shown once, never stored in clear

    @app.post("/admin/keys/revoke")
    def revoke_key(request: Request, user: Annotated[auth.User, Depends(role("admin", post=True))], key_id: Annotated[int, Form()]):
        with engine.begin() as connection:
            auth.revoke_api_key(connection, key_id)
            audit(connection, user.name, "api_key_revoked", f"key {key_id}", client_of(request))
        return RedirectResponse("/admin?" + urlencode({"message": f"key {key_id} revoked"}), status_code=303)

    @app.post("/admin/retrain")
    def retrain(request: Request, user: Annotated[auth.User, Depends(role("admin", post=True))]):
        try:
            run = retrainer.start(user.name)
        except RuntimeError as err:
            raise HTTPException(409, str(err)) from None
        with engine.begin() as connection:
            audit(connection, user.name, "retrain", run.message, client_of(request))
        return RedirectResponse("/admin", status_code=303)  # the page shows the run's state

    @app.get("/admin/retrain")
    def retrain_state(request: Request, user: Annotated[auth.User, Depends(role("admin"))]):
        """The retrainings' state, polled by the admin page while one runs."""
        return page(request, "retrain_runs.html", user, retrainer=retrainer)

    # --- machines -------------------------------------------------------------------------------

    def champion(model_name: str) -> str:
        """models:/NAME/VERSION of the champion, re-read from MLflow every ALIAS_SECONDS."""
        cached = champions.get(model_name)
        if cached and time.monotonic() - cached[0] < ALIAS_SECONDS:
            return cached[1]
        uri = champion_version_uri(cfg.model_copy(update={"registry": cfg.registry.model_copy(update={"model_name": model_name})}))
        champions[model_name] = (time.monotonic(), uri)
        return uri

    @app.post("/api/v1/score")
    async def score_api(request: Request):
        key = request.headers.get("X-API-Key") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        body = await request.body()
        # The database, MLflow and the model are blocking calls: in the threadpool, the event loop serves other requests meanwhile.
        return await run_in_threadpool(score_rows, key, body)

    def score_rows(key: str, body: bytes) -> JSONResponse | dict:
        with engine.connect() as connection:
            model_name = auth.api_key_model(connection, key)
        if model_name is None:
            return JSONResponse({"detail": "missing, unknown or revoked API key"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            body = json.loads(body)
        except ValueError:
            return JSONResponse({"detail": "the body must be JSON: {\"rows\": [{column: value, ...}, ...]}"}, status_code=400)
        rows = body.get("rows") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            return JSONResponse({"detail": "the body must hold \"rows\": a non-empty list of objects, one per record"}, status_code=422)
        try:
            uri = champion(model_name)
        except DataError as err:
            return JSONResponse({"detail": str(err)}, status_code=404)
        try:
            model = reviewer.model(uri)
            result, scored = score_frame(model, pd.DataFrame(rows), "request")
        except DataError as err:
            return JSONResponse({"detail": str(err)}, status_code=422)
        if len(result.rejected):
            rejected = [{"row": int(r), "errors": e} for r, e in zip(result.rejected[ROW_COLUMN], result.rejected[ERRORS_COLUMN])]
            detail = "; ".join(f"row {r['row']}: {r['errors']}" for r in rejected[:20])
            return JSONResponse({"detail": f"{len(rejected)} of {result.n_rows} rows rejected, none scored: {detail}", "rejected": rejected}, status_code=422)
        metrics.scored_rows.labels(model_name).inc(len(scored))
        metrics.alerts.labels(model_name).inc(int(scored["is_anomaly"].sum()))
        # Each score beside the id of its row: the id column's value as sent, or the row's number in the request (from 1, as errors count).
        id_column = model.unwrap_python_model().data_config.id_column
        if not (id_column and all(id_column in r for r in rows)):
            id_column = None
        ids = [r[id_column] for r in rows] if id_column else list(range(1, len(rows) + 1))
        return {"model_uri": uri, "id_column": id_column, "ids": ids,
                "score": scored["score"].astype(float).tolist(), "is_anomaly": scored["is_anomaly"].astype(int).tolist()}

    @app.get("/sw.js")
    def service_worker():
        """The service worker, from the root so that its scope is every page; always revalidated, so an upgrade reaches browsers."""
        return FileResponse(HERE / "static" / "sw.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    def healthz():
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return {"status": "ok"}

    @app.get("/metrics")
    def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.engine, app.state.reviewer, app.state.retrainer = engine, reviewer, retrainer
    return app


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))
