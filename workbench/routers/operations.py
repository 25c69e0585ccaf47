"""For the machines that run the workbench: a health check and Prometheus metrics."""

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..state import State

router = APIRouter()


@router.get("/healthz")
def healthz(state: State):
    with state.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    return {"status": "ok"}


@router.get("/metrics")
def prometheus(state: State):
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
