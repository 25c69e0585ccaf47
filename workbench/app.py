"""The analysts' workbench: FastAPI routes rendering Jinja2 templates, HTMX for partial updates.

Every page needs a session (cookie: HttpOnly, SameSite=Lax); every form and HTMX post carries the
session's CSRF token; viewers read, analysts label, admins retrain and manage users and keys.
`POST /api/v1/score` takes an API key instead and runs `pynomaly score`'s validation and scoring.
The routes are in `routers/`, one APIRouter per area; what they share is one `state.Workbench`.
"""


import os
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from pynomaly_core.config import PipelineConfig
from pynomaly_core.errors import DataError
from pynomaly_core.labels.feedback import database_url
from pynomaly_core.monitoring import alerts as notify
from pynomaly_core.tracking import store as tracking

from . import auth
from .db import connect, migrate
from .links import ServiceLink
from .metrics import Metrics
from .retrain import Retrainer
from .review import Reviewer
from .routers import admin, api, drift, operations, pages, review
from .state import NeedsLogin, Workbench, escaped

HERE = Path(__file__).parent
MAX_BODY_BYTES = 5 * 2**20  # the scoring API's default body limit (PYNOMALY_MAX_BODY_BYTES), about 20,000 rows of 30 columns
# Every page: scripts and styles from /static only (the vendored HTMX and workbench.js), never in a frame, no referrer
# leaving the site. The drift reports get their own, sandboxed policy (routers/pages.py).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
ERROR_TITLES = {400: "Bad request", 401: "Not logged in", 403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Cannot use that input"}


def create_app(cfg: PipelineConfig, db_url: str | None = None, prefect_ui: str | None = None, secure_cookies: bool = False,
               max_body_bytes: int | None = None, device_cookie_days: int | None = None, warm_up: bool = False) -> FastAPI:
    """The workbench over `cfg`'s project; `warm_up`: load the champion and set up its SHAP explainer before returning
    (`pynomaly ui` does, so a fresh server's first page does not; the tests' apps do not)."""
    db_url = db_url or database_url(cfg)
    days = str(device_cookie_days or os.environ.get("PYNOMALY_DEVICE_COOKIE_DAYS", auth.DEVICE_COOKIE_DAYS))
    if not days.isdigit() or int(days) < 1:
        raise DataError(f"PYNOMALY_DEVICE_COOKIE_DAYS is how long a device cookie lasts, in whole days (at least 1), not {days!r}")
    migrate(db_url)
    engine = connect(db_url)
    with engine.connect() as connection:
        key = auth.device_key(connection)
    # Point MLflow at the store without creating the experiment: the workbench reads as the read-only
    # user, and an experiment it created would be closed to the pipeline's runs.
    store = tracking.store_uri(cfg.tracking)
    tracking.use_store(store)
    # UI links: configured (a tracking server, whose UI is the same address, or PYNOMALY_MLFLOW_UI / PYNOMALY_PREFECT_UI), else the
    # default address while a server answers there.
    configured_mlflow = os.environ.get("PYNOMALY_MLFLOW_UI") or (store if store.startswith(("http://", "https://")) else None)
    configured_prefect = prefect_ui or os.environ.get("PYNOMALY_PREFECT_UI")
    state = Workbench(
        cfg=cfg, engine=engine, reviewer=Reviewer(cfg), metrics=Metrics(), templates=Jinja2Templates(directory=HERE / "templates"),
        mlflow_link=ServiceLink(configured_mlflow or notify.mlflow_ui_url(cfg), bool(configured_mlflow), tracking.browse_command(store)),
        prefect_link=ServiceLink(configured_prefect or "http://127.0.0.1:4200", bool(configured_prefect), "prefect server start (or make services)"),
        retrainer=Retrainer(cfg, db_url), secure_cookies=secure_cookies,
        max_body_bytes=max_body_bytes or int(os.environ.get("PYNOMALY_MAX_BODY_BYTES", MAX_BODY_BYTES)),
        device_key=key, device_cookie_days=int(days),
    )

    if warm_up:
        state.reviewer.warm_up()

    app = FastAPI(title="Pynomaly workbench", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workbench = state
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for area in (pages, review, drift, admin, api, operations):
        app.include_router(area.router)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        status = 500  # an exception out of the route becomes Starlette's 500 after this middleware: count it as one
        try:
            response = await call_next(request)
            status = response.status_code
            for header, value in SECURITY_HEADERS.items():
                response.headers.setdefault(header, value)
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            state.metrics.requests.labels(request.method, route, status).inc()
            state.metrics.latency.labels(route).observe(time.perf_counter() - started)

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
            return HTMLResponse(f"<span class='error'>{escaped(detail)}</span>", status_code=status, headers=headers)
        if "text/html" not in request.headers.get("accept", "") or request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=status, headers=headers)
        try:
            user = state.session(request)[0]
        except NeedsLogin:
            user = None
        response = state.page(request, "error.html", user, status=status, title=ERROR_TITLES.get(status, "Error"), detail=detail)
        response.status_code = status
        return response

    return app
