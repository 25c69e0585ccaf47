"""The review queue of a batch (discovery order by default, re-ranked after each label), its explanations
(SHAP, LIME) and the analysts' labels."""

from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from pynomaly_core.errors import DataError
from pynomaly_core.labels.feedback import ANOMALY, LABELS, NORMAL, UNSURE, label_history, latest_labels, row_values

from .. import auth
from ..db import audit
from ..review import ORDERS, View
from ..state import State, client_of, escaped, role

PAGE_SIZE = 25
LABEL_NAMES = {ANOMALY: "confirmed anomaly", NORMAL: "dismissed (normal)", UNSURE: "unsure"}

router = APIRouter()


def view_of(flagged: bool = False, label: str = "", sort: str = "queue", order: str = "discovery", q: str = "") -> View:
    """The queue's view from the query: filters, sort and order (a FastAPI dependency of every queue route)."""
    if label and label not in LABEL_NAMES:
        raise HTTPException(422, f"label must be one of {', '.join(LABEL_NAMES)}, not {label!r}")
    if sort not in ("queue", "score"):
        raise HTTPException(422, f"sort must be queue or score, not {sort!r}")
    if order not in ORDERS:
        raise HTTPException(422, f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    return View(flagged, label, sort, order, q.strip()[:200])


QueueView = Annotated[View, Depends(view_of)]


def queue_labels(state: State, queue) -> pd.DataFrame:
    """Each row's latest label on this version of the batch, by row id."""
    with state.engine.connect() as connection:
        return latest_labels(connection, queue.model_name, queue.batch_id, queue.version).set_index("row_id")


def review_context(state: State, batch: str, page_number: int, view: View) -> dict:
    """The queue after every decision taken on the batch so far, one page of `view`, and the rows reviewed."""
    queue = state.reviewer.queue(batch)
    labels = queue_labels(state, queue)
    queue.follow(labels.reset_index())
    shown = queue.select(labels["label"], view)
    n_pages = max(1, -(-len(shown) // PAGE_SIZE))
    page_number = min(page_number, n_pages)
    return {"queue": queue, "rows": queue.page(page_number, PAGE_SIZE, shown), "labels": labels, "reviewed": labels.reset_index().iloc[::-1],
            "page_number": page_number, "n_pages": n_pages, "page_size": PAGE_SIZE, "view": view, "orders": ORDERS, "n_shown": len(shown),
            "progress": queue.progress(labels["label"]), "id_column": state.cfg.data.id_column, "label_names": LABEL_NAMES}


@router.get("/review")
def review(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))], batch: str, view: QueueView,
           page_number: Annotated[int, Query(alias="page", ge=1)] = 1):
    return state.page(request, "review.html", user, **review_context(state, batch, page_number, view))


@router.get("/review/queue")
def review_queue(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))], batch: str, view: QueueView,
                 page_number: Annotated[int, Query(alias="page", ge=1)] = 1):
    """The queue's rows alone, re-ranked: fetched after each label (the label's response triggers `queue-changed`)."""
    return state.page(request, "queue.html", user, **review_context(state, batch, page_number, view))


@router.get("/review/shap")
def review_shap(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))], batch: str, view: QueueView,
                page_number: Annotated[int, Query(alias="page", ge=1)] = 1):
    """The page's top SHAP features, filled in after the page itself has rendered."""
    queue = state.reviewer.queue(batch)
    shown = queue.select(queue_labels(state, queue)["label"], view)
    try:
        explained = state.reviewer.explain(queue, queue.page(page_number, PAGE_SIZE, shown)["position"].to_numpy())
    except DataError as err:
        return HTMLResponse(f"<template>{escaped(str(err))}</template>")
    return state.page(request, "shap_cells.html", user, explained=explained)


@router.get("/row")
def row(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))], batch: str, row: str):
    reviewer = state.reviewer
    queue = reviewer.queue(batch)
    position = queue.position(row)
    with state.engine.connect() as connection:
        history = queue.version.labels(label_history(connection, queue.model_name, batch, row)).to_dict("records")
    try:
        shap_values = dict(zip(reviewer.feature_names(queue), reviewer.shap_values(queue, [position])[0]))
    except DataError:
        shap_values = {}
    return state.page(request, "row.html", user, queue=queue, row_id=row, position=position, score=float(queue.frame["score"].iloc[position]),
                      percentile=float(queue.percentile([position])[0]),
                      table=reviewer.row_against_reference(queue, position), shap=shap_values, history=history, label_names=LABEL_NAMES)


@router.get("/row/lime")
def row_lime(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))], batch: str, row: str):
    queue = state.reviewer.queue(batch)
    try:
        weights = state.reviewer.lime(queue, queue.position(row))
    except ImportError:  # lime is in the `explain` extra only
        return HTMLResponse("<p class='error'>Explaining with LIME needs the lime package: pip install 'pynomaly[explain]'</p>")
    return state.page(request, "lime_cells.html", user, weights=weights)


@router.post("/label")
def label(request: Request, state: State, user: Annotated[auth.User, Depends(role("analyst", post=True))], batch: Annotated[str, Form()],
          row: Annotated[str, Form()], label: Annotated[str, Form()], note: Annotated[str, Form()] = "", version: Annotated[str, Form()] = ""):
    if label not in LABEL_NAMES:
        raise HTTPException(422, f"label must be one of {', '.join(LABEL_NAMES)}, not {label!r}")
    queue = state.reviewer.queue(batch)
    if version and version != queue.version.fingerprint:  # the page showed rows the batch no longer holds
        raise HTTPException(409, f"batch {batch} was scored again since this page was loaded: reload it and label its new rows")
    position = queue.position(row)
    with state.engine.begin() as connection:
        connection.execute(LABELS.insert().values(
            model_name=queue.model_name, model_version=queue.model_version, batch=batch, row_id=row, label=label, note=note[:2000], user=user.name,
            batch_version=queue.version.fingerprint, row_values=row_values(queue.frame.iloc[position], state.cfg.data.columns)))
        audit(connection, user.name, "label", f"{batch} row {row}: {label}" + (f" ({note[:200]})" if note else ""), client_of(request))
    state.metrics.labels.labels(label).inc()
    return HTMLResponse(f'<span class="label label-{label}" title="by {escaped(user.name)}">{LABEL_NAMES[label]}</span>',
                        headers={"HX-Trigger": "queue-changed"})  # the queue re-ranks with this label
