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
    body = await request.body()
    # The database, MLflow and the model are blocking calls: in the threadpool, the event loop serves other requests meanwhile.
    return await run_in_threadpool(score_rows, state, key, body)


def score_rows(state: Workbench, key: str, body: bytes) -> JSONResponse | dict:
    with state.engine.connect() as connection:
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
