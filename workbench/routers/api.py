"""`POST /api/v1/score`: rows scored with the champion of the API key's model, as `pynomaly score` does."""

import json

import pandas as pd
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pynomaly_core.data.validation import ERRORS_COLUMN, ROW_COLUMN
from pynomaly_core.errors import DataError
from pynomaly_core.scoring.files import score_frame

from .. import auth
from ..state import State, Workbench

router = APIRouter(prefix="/api/v1")


@router.post("/score")
async def score_api(request: Request, state: State):
    key = request.headers.get("X-API-Key") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    # The database, MLflow and the model are blocking calls: in the threadpool, the event loop serves other requests meanwhile.
    model_name = await run_in_threadpool(key_model, state, key)
    if model_name is None:  # before a byte of the body is read
        return JSONResponse({"detail": "missing, unknown or revoked API key"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    body = await bounded_body(request, state.max_body_bytes)
    if body is None:
        return JSONResponse({"detail": f"the body is larger than {state.max_body_bytes} bytes (PYNOMALY_MAX_BODY_BYTES): send fewer rows per request"},
                            status_code=413)
    return await run_in_threadpool(score_rows, state, model_name, body)


def key_model(state: Workbench, key: str) -> str | None:
    with state.engine.connect() as connection:
        return auth.api_key_model(connection, key)


async def bounded_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (by its Content-Length, or as it streams in without one)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def score_rows(state: Workbench, model_name: str, body: bytes) -> JSONResponse | dict:
    try:
        body = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser follows
        return JSONResponse({"detail": "the body must be JSON, not nested deeper than a few hundred levels: {\"rows\": [{column: value, ...}, ...]}"},
                            status_code=400)
    rows = body.get("rows") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return JSONResponse({"detail": "the body must hold \"rows\": a non-empty list of objects, one per record"}, status_code=422)
    try:
        uri = state.champion(model_name)
    except DataError as err:
        return JSONResponse({"detail": str(err)}, status_code=404)
    try:
        model = state.reviewer.model(uri)
        result, scored = score_frame(model, pd.DataFrame(rows), "request")
    except DataError as err:
        return JSONResponse({"detail": str(err)}, status_code=422)
    if len(result.rejected):
        rejected = [{"row": int(r), "errors": e} for r, e in zip(result.rejected[ROW_COLUMN], result.rejected[ERRORS_COLUMN])]
        detail = "; ".join(f"row {r['row']}: {r['errors']}" for r in rejected[:20])
        return JSONResponse({"detail": f"{len(rejected)} of {result.n_rows} rows rejected, none scored: {detail}", "rejected": rejected}, status_code=422)
    state.metrics.scored_rows.labels(model_name).inc(len(scored))
    state.metrics.alerts.labels(model_name).inc(int(scored["is_anomaly"].sum()))
    # Each score beside the id of its row: the id column's value as sent, or the row's number in the request (from 1, as errors count).
    id_column = model.unwrap_python_model().data_config.id_column
    if not (id_column and all(id_column in r for r in rows)):
        id_column = None
    ids = [r[id_column] for r in rows] if id_column else list(range(1, len(rows) + 1))
    return {"model_uri": uri, "id_column": id_column, "ids": ids,
            "score": scored["score"].astype(float).tolist(), "is_anomaly": scored["is_anomaly"].astype(int).tolist()}
