"""For the machines that run the workbench: a health check, Prometheus metrics, and the service worker browsers install."""

from pathlib import Path

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..state import State

STATIC = Path(__file__).parents[1] / "static"
router = APIRouter()


@router.get("/sw.js")
def service_worker():
    """The service worker, from the root so that its scope is every page; always revalidated, so an upgrade reaches browsers."""
    return FileResponse(STATIC / "sw.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@router.get("/healthz")
def healthz(state: State):
    with state.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    return {"status": "ok"}


@router.get("/metrics")
def prometheus(state: State):
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
