"""The admin's "retrain with my labels": run the training deployment with `train.labels: feedback`."""

from __future__ import annotations

from pynomaly_core.config import PipelineConfig


def feedback_config(cfg: PipelineConfig) -> PipelineConfig:
    return PipelineConfig.model_validate(cfg.model_dump() | {"train": cfg.train.model_dump() | {"labels": "feedback"}})


def trigger_training(cfg: PipelineConfig) -> dict:
    """Schedule a run of `monitoring.training_deployment` (the Prefect API in PREFECT_API_URL) and return at once."""
    import httpx
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    name = cfg.monitoring.training_deployment
    try:
        flow_run = run_deployment(name, parameters={"config": feedback_config(cfg).model_dump(mode="json")}, timeout=0,
                                  tags=["retrain", "feedback"], as_subflow=False)
    except ObjectNotFound:
        return {"message": f"no deployment {name}: deploy the training flow first (make deploy)", "flow_run_id": None}
    except httpx.TransportError as err:  # refused, timed out, unresolvable
        return {"message": f"the Prefect API at {PREFECT_API_URL.value()} cannot be reached ({err}): start it (make services) and retry",
                "flow_run_id": None}
    return {"message": f"training run {flow_run.name} ({flow_run.id}) scheduled on {name} with the analysts' labels", "flow_run_id": str(flow_run.id)}
