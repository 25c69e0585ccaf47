"""Register the scheduled deployments with the Prefect server (`make deploy`).

    python -m flows.deploy [--config configs/demo.yaml] [--pool pynomaly]

Each deployment runs this checkout's code: the process worker changes into the project folder
(a `set_working_directory` pull step), so the config's relative paths resolve there. Its
`config` parameter is typed by the pydantic model and defaults to the given YAML file, so the
Prefect UI's "Run" form shows and validates every setting.
`scoring` and `monitoring` read the newest batch from `data/incoming/batch.csv` unless a run
names another `batch`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from prefect import flow

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--pool", default=os.environ.get("PREFECT_WORK_POOL", "pynomaly"))
    args = parser.parse_args(argv)
    deploy(args.config, args.pool)


if __name__ == "__main__":
    main()
