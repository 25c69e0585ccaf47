"""The monitoring stages as Prefect tasks, and the retraining request. No drift logic lives here."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound

from pynomaly_core import monitoring
from pynomaly_core.config import PipelineConfig
from tasks.training import stage_task

RETRAIN_EVENT = "pynomaly.retrain.requested"

score_batch = stage_task(monitoring.score_batch)
monitor_drift = stage_task(monitoring.monitor_drift)


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
