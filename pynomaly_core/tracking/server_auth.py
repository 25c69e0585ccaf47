"""The MLflow server's authorization function: its basic auth, plus one rule MLflow has no permission for.

MLflow's basic-auth app lets every signed-in user create experiments and registered models (without workspaces
its creation checks pass for anyone not explicitly denied, and a DENY grant on every model would also deny reading
them). So a read-only user could create a model name the pipeline has not used yet, own it (MANAGE) and set its
@champion. With `authorization_function = pynomaly_core.tracking.server_auth:authenticate` in the server's basic_auth.ini,
only the users named in PYNOMALY_MLFLOW_CREATORS (comma-separated: the admin and the pipeline user) may create
them; everything else is MLflow's own check.
"""

from __future__ import annotations

import os

from flask import Response, request
from mlflow.server.auth import authenticate_request_basic_auth

CREATE_ROUTES = ("/mlflow/experiments/create", "/mlflow/registered-models/create")


def creators() -> set[str]:
    return {name.strip() for name in os.environ.get("PYNOMALY_MLFLOW_CREATORS", "").split(",") if name.strip()}


def authenticate():
    authorization = authenticate_request_basic_auth()
    if isinstance(authorization, Response):  # no or wrong credentials: MLflow's 401
        return authorization
    if request.path.endswith(CREATE_ROUTES) and authorization.username not in creators():
        return Response(f"user {authorization.username} may not create experiments or registered models", status=403)
    return authorization
