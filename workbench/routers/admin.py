"""Administration: users, API keys and retraining, for admins."""

from typing import Annotated
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from .. import auth, catalog
from ..db import API_KEYS, AUDIT, ROLES, USERS, audit
from ..state import State, client_of, role

router = APIRouter(prefix="/admin")


@router.get("")
def admin(request: Request, state: State, user: Annotated[auth.User, Depends(role("admin"))], new_key: str | None = None, message: str | None = None):
    with state.engine.connect() as connection:
        users = connection.execute(sa.select(USERS.c.name, USERS.c.role, USERS.c.created_at).order_by(USERS.c.name)).all()
        keys = connection.execute(sa.select(API_KEYS).order_by(API_KEYS.c.id.desc())).mappings().all()
        log = connection.execute(sa.select(AUDIT).order_by(AUDIT.c.id.desc()).limit(50)).mappings().all()
    models = sorted({v.name for v in catalog.model_versions(state.cfg)})
    return state.page(request, "admin.html", user, users=users, keys=keys, log=log, roles=ROLES, models=models, new_key=new_key, message=message,
                      retrainer=state.retrainer)


@router.post("/users")
def add_user(request: Request, state: State, user: Annotated[auth.User, Depends(role("admin", post=True))], name: Annotated[str, Form()],
             password: Annotated[str, Form()], new_role: Annotated[str, Form(alias="role")]):
    try:
        with state.engine.begin() as connection:
            auth.add_user(connection, name, password, new_role)
            audit(connection, user.name, "user_added", f"{name} ({new_role})", client_of(request))
    except auth.AuthError as err:
        raise HTTPException(422, str(err)) from None
    return RedirectResponse("/admin?" + urlencode({"message": f"added {name} ({new_role})"}), status_code=303)


@router.post("/keys")
def add_key(request: Request, state: State, user: Annotated[auth.User, Depends(role("admin", post=True))], model: Annotated[str, Form()]):
    with state.engine.begin() as connection:
        key = auth.create_api_key(connection, model, user.name)
        audit(connection, user.name, "api_key_created", f"{key[:12]}... for {model}", client_of(request))
    return admin(request, state, user, new_key=key)  # shown once, never stored in clear


@router.post("/keys/revoke")
def revoke_key(request: Request, state: State, user: Annotated[auth.User, Depends(role("admin", post=True))], key_id: Annotated[int, Form()]):
    with state.engine.begin() as connection:
        auth.revoke_api_key(connection, key_id)
        audit(connection, user.name, "api_key_revoked", f"key {key_id}", client_of(request))
    return RedirectResponse("/admin?" + urlencode({"message": f"key {key_id} revoked"}), status_code=303)


@router.post("/retrain")
def retrain(request: Request, state: State, user: Annotated[auth.User, Depends(role("admin", post=True))]):
    try:
        run = state.retrainer.start(user.name)
    except RuntimeError as err:  # one is running
        raise HTTPException(409, str(err)) from None
    with state.engine.begin() as connection:
        audit(connection, user.name, "retrain", run.message, client_of(request))
    return RedirectResponse("/admin", status_code=303)  # the page shows the run's state


@router.get("/retrain")
def retrain_state(request: Request, state: State, user: Annotated[auth.User, Depends(role("admin"))]):
    """The retrainings' state, polled by the admin page while one runs."""
    return state.page(request, "retrain_runs.html", user, retrainer=state.retrainer)
