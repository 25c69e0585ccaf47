"""Register the scheduled deployments with the Prefect server (`make deploy`).

    python -m flows.deploy [--config configs/demo.yaml] [--pool pynomaly]

Each deployment runs this checkout's code: the process worker changes into the project folder
(a `set_working_directory` pull step), so the config's relative paths resolve there. Its
`config` parameter is typed by the pydantic model and defaults to the given YAML file, so the
Prefect UI's "Run" form shows and validates every setting.
It also creates the automation that marks a flow run crashed once its heartbeats stop (its
worker or machine died): Prefect's own recipe for "zombie" runs, which its server lacks.
`scoring` and `monitoring` read the newest batch from `data/incoming/batch.csv` unless a run
names another `batch`.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path

from prefect import flow
from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings

from pynomaly_core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
INCOMING_BATCH = "data/incoming/batch.csv"
# name, entrypoint, cron, description, parameters besides `config`
DEPLOYMENTS = [
    ("training", "flows/training.py:training_flow", "0 2 * * *", "Nightly: validate, tune, evaluate, explain and register a detector.", {}),
    ("scoring", "flows/scoring.py:scoring_flow", "0 * * * *", "Hourly: validate and score the incoming batch with the champion.", {"batch": INCOMING_BATCH}),
    ("monitoring", "flows/monitoring.py:monitoring_flow", "30 * * * *", "Hourly: drift of the incoming batch; retrain when due.", {"batch": INCOMING_BATCH}),
]


def deploy(config_path: str | Path, work_pool: str, root: Path = ROOT) -> list[str]:
    """Create or update every deployment; returns their ids."""
    config = load_config(root / config_path)
    ids = []
    for name, entrypoint, cron, description, parameters in DEPLOYMENTS:
        source = flow.from_source(source=str(root), entrypoint=entrypoint)
        ids.append(str(source.deploy(
            name=name,
            work_pool_name=work_pool,
            cron=cron,
            parameters={**parameters, "config": config.model_dump(mode="json")},
            description=description,
            tags=["pynomaly", config.name],
            print_next_steps=False,
            ignore_warnings=True,
        )))
        print(f"deployed {source.name}/{name} ({cron}) on work pool '{work_pool}'")
    return ids


CRASH_AUTOMATION = "crash-silent-flow-runs"
FINAL_EVENTS = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}


def crash_silent_runs() -> str:
    """Create (once) the automation that marks a flow run Crashed when no heartbeat came for three
    heartbeat periods (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, seconds); returns its id."""
    try:
        return str(Automation.read(name=CRASH_AUTOMATION).id)
    except ValueError:  # not created yet
        pass
    period = get_current_settings().flows.heartbeat_frequency
    automation = Automation(
        name=CRASH_AUTOMATION,
        description="A flow run whose heartbeats stopped lost its process (worker or machine gone).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=3 * period),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {3 * period} s: its process is gone")],
    ).create()
    print(f"created automation {CRASH_AUTOMATION} (no heartbeat for {3 * period} s -> Crashed)")
    return str(automation.id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--pool", default=os.environ.get("PREFECT_WORK_POOL", "pynomaly"))
    args = parser.parse_args(argv)
    deploy(args.config, args.pool)
    crash_silent_runs()


if __name__ == "__main__":
    main()
