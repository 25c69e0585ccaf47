"""Sessions (login, logout) and the browsing pages: models, batches, rejected rows, drift reports, detectors."""

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import pandas as pd
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from pynomaly_core.data.validation import ERRORS_COLUMN, ROW_COLUMN
from pynomaly_core.errors import DataError

from .. import auth, catalog
from ..db import audit
from ..state import DEVICE_COOKIE, LOGIN_CSRF_COOKIE, SESSION_COOKIE, State, client_of, role

router = APIRouter()
# An Evidently report runs its own inline scripts and styles; sandboxed (a unique origin: no cookies, no same-origin
# requests that carry the session), they cannot act on the workbench; nor may it be framed.
REPORT_CSP = "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; " \
             "img-src data:; font-src data:; frame-ancestors 'none'"
# Logins from a trusted device run on threads of their own: a flood of untrusted logins fills the server's thread pool.
_TRUSTED_THREADS = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="trusted-login")


@router.get("/login")
async def login_form(request: Request, state: State):  # no thread: under a login flood the pool's threads are all taken
    return _login_page(request, state, None)


def _login_page(request: Request, state: State, error: str | None) -> HTMLResponse:
    """The form; `error` is the app's own text, never one from the URL."""
    token = secrets.token_urlsafe(32)
    response = state.page(request, "login.html", None, login_csrf=token, error=error)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=state.secure_cookies)
    return response


# bandit B107 takes csrf_token's default for a password: "" is a missing token, which is refused.
@router.post("/login")
async def login(request: Request, state: State, name: Annotated[str, Form()], password: Annotated[str, Form()], csrf_token: Annotated[str, Form()] = ""):  # nosec B107
    # The login form has no session yet: its token is checked against a cookie (double submit).
    if not auth.csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE, ""), csrf_token):
        raise HTTPException(403, "missing or wrong CSRF token")
    device = auth.trusted_device(state.device_key, request.cookies.get(DEVICE_COOKIE), name)
    try:
        token, user = await _attempt(state.engine, name, password, client_of(request), device)
    except auth.AuthError as err:
        return _login_again(request, state, str(err), 429 if isinstance(err, auth.TooManyAttempts) else 401)
    except sa.exc.OperationalError:  # SQLite still locked after its busy timeout: a flood, not a server fault
        return _login_again(request, state, "the server is busy; try again in a moment", 503)
    response = RedirectResponse("/batches", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=state.secure_cookies, max_age=auth.SESSION_HOURS * 3600)
    # A new device cookie at every login (a new nonce: earlier failures on this device stop counting); sent to /login only.
    response.set_cookie(DEVICE_COOKIE, auth.device_cookie(state.device_key, user.name, state.device_cookie_days), path="/login",
                        httponly=True, samesite="strict", secure=state.secure_cookies, max_age=state.device_cookie_days * 86400)
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


async def _attempt(engine: sa.Engine, name: str, password: str, client: str, device: str | None) -> tuple[str, auth.User]:
    """auth.login on the threads of its lane: a trusted device's on its own, any other (a refused device's too) on the
    server's pool, as every sync route."""
    if device is not None:
        try:
            return await asyncio.get_running_loop().run_in_executor(_TRUSTED_THREADS, auth.login, engine, name, password, client, device)
        except auth.DeviceLocked:
            pass
    return await run_in_threadpool(auth.login, engine, name, password, client)


def _login_again(request: Request, state: State, error: str, status: int) -> HTMLResponse:
    response = _login_page(request, state, error)
    response.status_code = status
    return response


@router.post("/logout")
def logout(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer", post=True))]):
    with state.engine.begin() as connection:
        auth.logout(connection, request.cookies[SESSION_COOKIE])
        audit(connection, user.name, "logout", client=client_of(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/")
def home():
    return RedirectResponse("/batches", status_code=303)


@router.get("/models")
def models(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))]):
    return state.page(request, "models.html", user, versions=catalog.model_versions(state.cfg))


@router.get("/batches")
def batches(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))]):
    return state.page(request, "batches.html", user, batches=catalog.batches(state.cfg))


@router.get("/batches/rejected")
def rejected(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))], batch: str):
    path = catalog.rejected_file(state.cfg, batch)
    if not catalog.inside_scored_dir(state.cfg, path) or not path.exists():
        raise DataError(f"batch {batch} has no rejected rows")
    frame = pd.concat([pd.read_csv(part, nrows=1000, dtype=str, keep_default_na=False) for part in catalog.rejected_parts(path)]).head(1000)
    values = [c for c in frame.columns if c not in (ROW_COLUMN, ERRORS_COLUMN)]  # the reason first, then the values as given
    return state.page(request, "rejected.html", user, batch=batch, rows=frame, shown=len(frame), values=values, row_column=ROW_COLUMN,
                      errors_column=ERRORS_COLUMN)


@router.get("/batches/drift")
def drift_report(batch: str, state: State, user: Annotated[auth.User, Depends(role("viewer"))]):
    path = Path(state.cfg.monitoring.scored_dir) / f"{batch}.drift.html"
    if not catalog.inside_scored_dir(state.cfg, path) or not path.is_file():
        raise DataError(f"batch {batch} has no drift report")
    return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP})


@router.get("/detectors")
def detectors(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))], q: str = "", backend: str = "", input: str = "", gpu: str = ""):
    rows = catalog.detectors(q, backend=backend, input=input, gpu=gpu)
    template = "detector_rows.html" if request.headers.get("HX-Request") else "detectors.html"
    everything = catalog.detectors()
    cannot_run = [d for d in everything if d["missing"]]
    by_hint: dict[str, list[str]] = {}
    for d in cannot_run:
        by_hint.setdefault(d["install"], []).append(d["name"])
    return state.page(request, template, user, detectors=rows, q=q, backend=backend, input=input, gpu=gpu, cannot_run=cannot_run,
                      cannot_run_by_hint=by_hint, n_detectors=len(everything),
                      backends=sorted({d["backend"] for d in everything}), inputs=sorted({d["input"] for d in everything}))
