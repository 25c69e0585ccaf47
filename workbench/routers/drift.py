"""Drift the analyst can see: a batch against its model's reference as charts, and the trend across batches."""

from pathlib import Path
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Depends, Request

from pynomaly_core.errors import DataError
from pynomaly_core.monitoring import drift as drift_rules

from .. import auth, catalog, charts
from ..state import State, role

router = APIRouter(prefix="/drift")


@router.get("")
def drift_page(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))], batch: str):
    """The batch against its model's reference: drifted columns, scores and alert rate as charts, and the verdict's rule."""
    cfg = state.cfg
    queue = state.reviewer.queue(batch)  # the batch with the model that scored it
    judged = catalog.verdict(cfg, batch)
    if judged is None:
        raise DataError(f"batch {batch} has not been judged for drift: pynomaly monitor --batch FILE judges a batch")
    reference = state.reviewer.reference(queue.model_uri)
    p_values = judged["feature_p_values"]
    # The drifted columns; when none drifted, the three nearest to drifting, so the page still shows where to look.
    shown = judged["drifted_columns"] or sorted(p_values, key=p_values.get)[:3]
    specs = {}
    for i, column in enumerate(shown):
        chart = charts.distribution if pd.api.types.is_numeric_dtype(reference[column]) else charts.categories
        specs[f"column-{i}"] = chart(reference[column], queue.frame[column], f"{column} (K-S p = {p_values[column]:.2g})")
    specs["scores"] = charts.distribution(reference["score"], queue.frame["score"], "score", threshold=queue.threshold)
    alerts = judged["alert_rate"]
    band = charts.alert_band(alerts["n_alerts"], alerts["n_rows"], alerts["expected"], cfg.monitoring.alert_rate_alpha)
    specs["alert-rate"] = charts.alert_rate(alerts["observed"], alerts["expected"], band)
    return state.page(request, "drift.html", user, queue=queue, judged=judged, shown=shown, specs=specs, band=band,
                      rule=drift_rules.rule(cfg.monitoring, len(p_values) or len(cfg.data.columns)),
                      report=(Path(cfg.monitoring.scored_dir) / f"{batch}.drift.html").exists())


@router.get("/trend")
def drift_trend(request: Request, state: State, user: Annotated[auth.User, Depends(role("viewer"))]):
    """Alert rate and drift share of every judged batch over time, per model version."""
    history = catalog.monitoring_history(state.cfg)
    specs = {}
    if len(history):
        alpha = state.cfg.monitoring.alert_rate_alpha
        bands = [charts.alert_band(round(r.alert_rate * r.n_rows), r.n_rows, r.expected, alpha) if r.expected == r.expected  # NaN: not logged
                 else (float("nan"), float("nan")) for r in history.itertuples()]
        specs["trend"] = charts.trend(history.assign(band_low=[b[0] for b in bands], band_high=[b[1] for b in bands]))
    return state.page(request, "trend.html", user, history=history, specs=specs)
