"""Alerts where people look: a message through Apprise (webhook, Slack, e-mail, ...) when a batch drifted,
its alert rate left its band, or it could not be scored.

The URLs come from `monitoring.notify`; their secrets are `${ENV_VAR}` references, expanded here at send
time, so the YAML never holds them. Retries are the caller's (the Prefect task in tasks/monitoring.py).
"""

from __future__ import annotations

import os
import string
from urllib.parse import quote

import apprise
from mlflow import MlflowClient

from ..tracking import store as tracking
from ..config import PipelineConfig
from ..tracking.champion import champion_uri
from .results import MonitorResult


class NotifyError(RuntimeError):
    """A message that was not delivered; says to which URL (secrets masked) and why."""


def _expand(url: str) -> str:
    try:
        return string.Template(url).substitute(os.environ)
    except KeyError as err:
        raise NotifyError(f"monitoring.notify '{url}': environment variable {err.args[0]} is not set") from None
    except ValueError as err:
        raise NotifyError(f"monitoring.notify '{url}': {err} (write a variable as ${{NAME}})") from None


def send(url: str, title: str, body: str) -> None:
    """Deliver one message to one configured URL (which may name several services); raise NotifyError when it was not."""
    targets = apprise.Apprise()
    if not targets.add(_expand(url)):
        raise NotifyError(f"monitoring.notify '{url}': not a notification URL Apprise knows, once its variables are expanded")
    if not targets.notify(body=body, title=title, notify_type=apprise.NotifyType.WARNING):
        raise NotifyError(f"monitoring.notify '{url}': not delivered (Apprise's log says why)")


def mlflow_ui_url(cfg: PipelineConfig) -> str:
    uri = tracking.tracking_uri(cfg.tracking)
    return (uri if uri.startswith(("http://", "https://")) else cfg.monitoring.mlflow_ui).rstrip("/")


def run_link(cfg: PipelineConfig, run_id: str) -> str:
    experiment = MlflowClient().get_run(run_id).info.experiment_id
    return f"{mlflow_ui_url(cfg)}/#/experiments/{experiment}/runs/{run_id}"


def drift_message(cfg: PipelineConfig, result: MonitorResult) -> tuple[str, str] | None:
    """The title and body telling which checks fired on the batch, with their figures and links; None when none fired."""
    if not result.signals:
        return None
    figures = {
        "features": ", ".join(f"{c} p={result.feature_p_values[c]:.2g}" for c in result.drifted_columns),
        "scores": f"K-S {result.score_drift['ks_statistic']:.3f} (p={result.score_drift['ks_p_value']:.2g}), PSI {result.score_drift['psi']:.3f}",
        "alert_rate": f"{result.alert_rate['observed']:.1%} of {result.n_rows} rows flagged, expected {result.alert_rate['expected']:.1%}",
    }
    checks = [f"- {signal}: {reason} [{figures[signal]}]" for signal, reason in zip(result.signals, result.reasons, strict=True)]
    report = "none" if result.report_uri is None else (
        f"{mlflow_ui_url(cfg)}/get-artifact?path={quote(f'monitoring/{os.path.basename(result.report_uri)}', safe='')}&run_uuid={result.run_id}"
        f" (artifact {result.report_uri})"
    )
    body = "\n".join([
        f"Model: {result.model_uri}",
        f"Batch: {result.batch} ({result.n_rows} rows)",
        "Checks fired:",
        *checks,
        f"Retraining due: {'yes' if result.retrain_due else 'no'}",
        f"Evidently report: {report}",
        f"MLflow run: {run_link(cfg, result.run_id)}",
    ])
    return f"pynomaly: {cfg.registry.model_name} batch {os.path.basename(result.batch)}: {', '.join(result.signals)}", body


def failure_message(cfg: PipelineConfig, batch: str, error: BaseException) -> tuple[str, str]:
    """The title and body telling that a batch could not be scored, and why."""
    body = "\n".join([
        f"Model: {champion_uri(cfg.registry.model_name)}",
        f"Batch: {batch}",
        f"Checks fired:\n- scoring failed: {type(error).__name__}: {error}",
        f"MLflow: {mlflow_ui_url(cfg)}/#/models/{cfg.registry.model_name}",
    ])
    return f"pynomaly: {cfg.registry.model_name} batch {os.path.basename(batch)}: scoring failed", body


def record(cfg: PipelineConfig, run_id: str, status: str) -> None:
    """Note on the monitoring run whether its alert went out."""
    tracking.setup(cfg.tracking)
    MlflowClient().set_tag(run_id, "alert", status[:5000])
