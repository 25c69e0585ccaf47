"""The monitoring stages as Prefect tasks, and the retraining request. No drift logic lives here."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound

from pynomaly_core.monitoring import monitor as monitoring, alerts as notify
from pynomaly_core.config import PipelineConfig
from tasks.training import stage_task

RETRAIN_EVENT = "pynomaly.retrain.requested"

score_batch = stage_task(monitoring.score_batch)
monitor_drift = stage_task(monitoring.monitor_drift)
send_alert = task(notify.send, name="send_alert", cache_policy=NO_CACHE)


def alert(config: PipelineConfig, message: tuple[str, str], run_id: str | None = None) -> str:
    """Send `message` to each monitoring.notify URL, retrying as configured; a failure is logged, noted on the
    monitoring run and returned, never raised, so the verdict already recorded stands."""
    options = config.monitoring
    attempt = send_alert.with_options(retries=options.notify_retries, retry_delay_seconds=options.notify_retry_delay)
    failures = []
    for url in options.notify:
        state = attempt(url, *message, return_state=True)
        if state.is_failed():
            failures.append(str(state.result(raise_on_failure=False)))
            get_run_logger().error("alert not delivered after %d attempts: %s", options.notify_retries + 1, failures[-1])
    status = "failed: " + "; ".join(failures) if failures else "sent"
    if run_id is not None:
        notify.record(config, run_id, status)
    return status


@task(cache_policy=NO_CACHE)
def request_retraining(config: PipelineConfig, verdict: monitoring.MonitorResult) -> dict:
    """Run the training deployment when it exists; otherwise emit an event an automation can act on."""
    reason = "; ".join(verdict.reasons)
    record = {"reason": reason, "signals": verdict.signals, "batch": verdict.batch, "model_uri": verdict.model_uri}
    name = config.monitoring.training_deployment
    try:
        # timeout=0: schedule the run and return; the training flow takes minutes.
        flow_run = run_deployment(
            name,
            parameters={"config": config.model_dump(mode="json")},
            timeout=0,
            tags=["retrain", *verdict.signals],
            as_subflow=False,
        )
        record.update(method="deployment", deployment=name, flow_run_id=str(flow_run.id))
    except ObjectNotFound:
        event = emit_event(
            RETRAIN_EVENT,
            resource={"prefect.resource.id": f"pynomaly.model.{config.registry.model_name}", "prefect.resource.name": config.registry.model_name},
            payload={**record, "monitoring_run_id": verdict.run_id},
        )
        record.update(method="event", event=RETRAIN_EVENT, event_id=str(event.id) if event else None, missing_deployment=name)
    get_run_logger().warning("retraining requested via %s: %s", record["method"], reason)
    monitoring.record_retraining(config, verdict.run_id, record)
    return record
