"""The ASGI app behind `pynomaly serve`: MLflow's scoring server, with the requests it would
answer with a 500 turned away first.

MLflow's /invocations splits the Content-Type header without checking it is there, so a POST
without one is an "Internal Server Error" (found by schemathesis, tests/test_fuzz.py).
The model comes from the folder in MLflow's own `__pyfunc_model_path__` variable, set by `pynomaly serve`.
"""

from __future__ import annotations

import json

from mlflow.pyfunc.scoring_server.app import app as scoring_app

MISSING_TYPE = json.dumps({"error_code": "BAD_REQUEST",
                           "message": "the request has no Content-Type header: send application/json or text/csv"}).encode()


async def app(scope, receive, send):
    headers = dict(scope.get("headers", ())) if scope["type"] == "http" else {}
    if scope["type"] == "http" and scope["method"] == "POST" and b"content-type" not in headers:
        await send({"type": "http.response.start", "status": 415,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(MISSING_TYPE)).encode())]})
        await send({"type": "http.response.body", "body": MISSING_TYPE})
        return
    await scoring_app(scope, receive, send)
