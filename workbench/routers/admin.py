"""Administration: users (add, unlock, disable, end sessions), API keys and retraining, for admins."""

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .. import auth, catalog
from ..db import API_KEYS, AUDIT, ROLES, USERS, audit
from ..state import State, Workbench, client_of, role

router = APIRouter(prefix="/admin")
AUDIT_SHOWN = 50
# What a redirect back to /admin says: by code, so no link can make the page show a text of its own.
MESSAGES = {
    "user_added": "User added.", "key_revoked": "Key revoked.", "retrain": "Retraining started: its state is shown below.",
    "unlocked": "Account unlocked.", "disabled": "Account disabled and its sessions ended.", "enabled": "Account enabled.",
    "sessions_ended": "Sessions ended.",
}
Admin = Annotated[auth.User, Depends(role("admin"))]
AdminPost = Annotated[auth.User, Depends(role("admin", post=True))]


@router.get("")
def admin(request: Request, state: State, user: Admin, done: str = "", action: str = "", who: str = ""):
    return admin_page(request, state, user, message=MESSAGES.get(done), action=action, who=who)


def admin_page(request: Request, state: Workbench, user: auth.User, message: str | None = None, new_key: str | None = None, action: str = "",
               who: str = "", status: int = 200) -> HTMLResponse:
    """The page; its audit log filtered by `action` and `who` (the entry's user, or the account it names)."""
    log_query = sa.select(AUDIT).order_by(AUDIT.c.id.desc()).limit(AUDIT_SHOWN)
    if action:
        log_query = log_query.where(AUDIT.c.action == action)
    if who:
        log_query = log_query.where(sa.or_(AUDIT.c.user == who, AUDIT.c.detail == who))
    with state.engine.connect() as connection:
        users = connection.execute(sa.select(USERS.c.name, USERS.c.role, USERS.c.created_at, USERS.c.disabled).order_by(USERS.c.name)).all()
        keys = connection.execute(sa.select(API_KEYS).order_by(API_KEYS.c.id.desc())).mappings().all()
        log = connection.execute(log_query).mappings().all()
        actions = connection.execute(sa.select(AUDIT.c.action).distinct().order_by(AUDIT.c.action)).scalars().all()
    experiment = catalog.client(state.cfg).get_experiment_by_name(state.cfg.tracking.experiment)
    models = sorted({v.name for v in catalog.model_versions(state.cfg) if experiment and v.experiment_id == experiment.experiment_id})
    response = state.page(request, "admin.html", user, users=users, keys=keys, log=log, roles=ROLES, models=models, new_key=new_key,
                          message=message, actions=actions, action=action, who=who, shown=AUDIT_SHOWN,
                          retrainer=state.retrainer)
    response.status_code = status
    return response


def done(code: str) -> RedirectResponse:
    return RedirectResponse(f"/admin?done={code}", status_code=303)


@router.post("/users")
def add_user(request: Request, state: State, user: AdminPost, name: Annotated[str, Form()], password: Annotated[str, Form()],
             new_role: Annotated[str, Form(alias="role")]):
    try:
        with state.engine.begin() as connection:
            name = auth.add_user(connection, name, password, new_role)
            audit(connection, user.name, "user_added", f"{name} ({new_role})", client_of(request))
    except auth.AuthError as err:
        return admin_page(request, state, user, message=f"User not added: {err}", status=422)
    return done("user_added")


def account_action(request: Request, state: Workbench, admin: auth.User, name: str, act, action: str, code: str) -> Response:
    """Run `act(connection, name)` on an existing account, audited as `action` with the account's name as detail."""
    with state.engine.begin() as connection:
        if not connection.execute(sa.select(USERS.c.id).where(USERS.c.name == name)).first():
            return admin_page(request, state, admin, message=f"No user {name!r}.", status=404)
        act(connection, name)
        audit(connection, admin.name, action, name, client_of(request))
    return done(code)


@router.post("/users/unlock")
def unlock_user(request: Request, state: State, user: AdminPost, name: Annotated[str, Form()]):
    """Lift the failed-login limit on an account now: the audit entry is the unlock (earlier failures stop counting)."""
    return account_action(request, state, user, name, lambda connection, account: None, auth.UNLOCKED, "unlocked")


@router.post("/users/disable")
def disable_user(request: Request, state: State, user: AdminPost, name: Annotated[str, Form()]):
    if name == user.name:
        return admin_page(request, state, user, message="You cannot disable your own account.", status=422)
    return account_action(request, state, user, name, lambda connection, account: auth.set_disabled(connection, account, True),
                          "account_disabled", "disabled")


@router.post("/users/enable")
def enable_user(request: Request, state: State, user: AdminPost, name: Annotated[str, Form()]):
    return account_action(request, state, user, name, lambda connection, account: auth.set_disabled(connection, account, False),
                          "account_enabled", "enabled")


@router.post("/users/end-sessions")
def end_sessions(request: Request, state: State, user: AdminPost, name: Annotated[str, Form()]):
    return account_action(request, state, user, name, auth.end_sessions, "sessions_ended", "sessions_ended")


@router.post("/keys")
def add_key(request: Request, state: State, user: AdminPost, model: Annotated[str, Form()]):
    with state.engine.begin() as connection:
        key = auth.create_api_key(connection, model, user.name)
        audit(connection, user.name, "api_key_created", f"{key[:12]}... for {model}", client_of(request))
    return admin_page(request, state, user, new_key=key)  # shown once, never stored in clear


@router.post("/keys/revoke")
def revoke_key(request: Request, state: State, user: AdminPost, key_id: Annotated[int, Form()]):
    with state.engine.begin() as connection:
        if not auth.revoke_api_key(connection, key_id):
            return admin_page(request, state, user, message=f"No live key with id {key_id}: nothing revoked.", status=404)
        audit(connection, user.name, "api_key_revoked", f"key {key_id}", client_of(request))
    return done("key_revoked")


@router.post("/retrain")
def retrain(request: Request, state: State, user: AdminPost):
    try:
        run = state.retrainer.start(user.name)
    except RuntimeError as err:  # one is running
        raise HTTPException(409, str(err)) from None
    with state.engine.begin() as connection:
        audit(connection, user.name, "retrain", run.message, client_of(request))
    return done("retrain")  # the page shows the run's state


@router.get("/retrain")
def retrain_state(request: Request, state: State, user: Admin):
    """The retrainings' state, polled by the admin page while one runs."""
    return state.page(request, "retrain_runs.html", user, retrainer=state.retrainer)
