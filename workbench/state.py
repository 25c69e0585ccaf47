"""What every route of one workbench app shares, and the dependencies that hand it out.

`create_app` builds one `Workbench` and keeps it on `app.state.workbench`; a route asks for it
with the `State` dependency, for the session's user with `role(...)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import escape

from pynomaly_core.config import PipelineConfig
from pynomaly_core.errors import DataError
from pynomaly_core.tracking.champion import champion_version_uri

from . import auth, catalog
from .links import ServiceLink
from .metrics import Metrics
from .retrain import Retrainer
from .review import Reviewer

SESSION_COOKIE, LOGIN_CSRF_COOKIE, DEVICE_COOKIE = "pynomaly_session", "pynomaly_login_csrf", "pynomaly_device"
ALIAS_SECONDS = 10  # how long the API trusts a resolved @champion before asking MLflow again


class NeedsLogin(Exception):
    pass


@dataclass
class Workbench:
    cfg: PipelineConfig
    engine: sa.Engine
    reviewer: Reviewer
    metrics: Metrics
    templates: Jinja2Templates
    mlflow_link: ServiceLink
    prefect_link: ServiceLink
    retrainer: Retrainer
    secure_cookies: bool = False
    max_body_bytes: int = 5 * 2**20  # of a scoring request
    device_key: bytes = b""  # signs device cookies (auth.device_key)
    device_cookie_days: int = auth.DEVICE_COOKIE_DAYS
    champions: dict[str, tuple[float, str]] = field(default_factory=dict)

    def session(self, request: Request) -> tuple[auth.User, str]:
        with self.engine.connect() as connection:
            found = auth.session_user(connection, request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise NeedsLogin
        return found

    def page(self, request: Request, name: str, user: auth.User | None, **context) -> HTMLResponse:
        csrf = None
        if user is not None:
            csrf = self.session(request)[1]
        return self.templates.TemplateResponse(request, name, {
            "user": user, "csrf": csrf, "mlflow_ui": self.mlflow_link.address(), "prefect_ui": self.prefect_link.address(),
            "mlflow_hint": self.mlflow_link.start_hint, "prefect_hint": self.prefect_link.start_hint, **context})

    def champion(self, model_name: str) -> str:
        """models:/NAME/VERSION of the champion, re-read from MLflow every ALIAS_SECONDS."""
        cached = self.champions.get(model_name)
        if cached and time.monotonic() - cached[0] < ALIAS_SECONDS:
            return cached[1]
        uri = champion_version_uri(model_name)
        if not catalog.registered_by_pipeline(self.cfg, uri):
            raise DataError(f"{uri} was not logged by a run of the pipeline's experiment {self.cfg.tracking.experiment!r}: it is not loaded")
        self.champions[model_name] = (time.monotonic(), uri)
        return uri


async def workbench(request: Request) -> Workbench:  # async: a sync dependency would wait for a thread of the pool
    return request.app.state.workbench


State = Annotated[Workbench, Depends(workbench)]


def session(request: Request, state: State) -> tuple[auth.User, str]:
    return state.session(request)


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


def client_of(request: Request) -> str:
    return request.client.host if request.client else ""


def escaped(text: str) -> str:
    return str(escape(text))
