"""The admin's "retrain with my labels": the training flow with `train.labels: feedback`.

With a Prefect API configured (PREFECT_API_URL) that has the `monitoring.training_deployment`, the
deployment runs it, as before. Without one (the embedded default, or an API without that
deployment) the workbench starts `pynomaly run` itself, in the background: the same flow run, on the
embedded Prefect and MLflow, its state and result (the new version, champion or not) shown on the
admin page. Only one retraining runs at a time.
"""

from __future__ import annotations

import os
import subprocess  # nosec B404: `pynomaly run` of this environment, no shell
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from pynomaly_core.config import PipelineConfig

LOG_TAIL = 3000  # characters of a failed run's output shown on the page


def feedback_config(cfg: PipelineConfig) -> PipelineConfig:
    return PipelineConfig.model_validate(cfg.model_dump() | {"train": cfg.train.model_dump() | {"labels": "feedback"}})


def trigger_training(cfg: PipelineConfig) -> dict:
    """Schedule a run of `monitoring.training_deployment` (the Prefect API in PREFECT_API_URL) and return at once.

    `outcome` is "scheduled", "no deployment" (the API answers but has none: run the flow here) or "error"."""
    import httpx
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    name = cfg.monitoring.training_deployment
    try:
        flow_run = run_deployment(name, parameters={"config": feedback_config(cfg).model_dump(mode="json")}, timeout=0,
                                  tags=["retrain", "feedback"], as_subflow=False)
    except ObjectNotFound:
        return {"outcome": "no deployment", "message": f"no deployment {name} on the Prefect API", "flow_run_id": None}
    except httpx.TransportError as err:  # refused, timed out, unresolvable
        return {"outcome": "error", "flow_run_id": None,
                "message": f"the Prefect API at {PREFECT_API_URL.value()} cannot be reached ({err}): start it (make services) and retry"}
    return {"outcome": "scheduled", "flow_run_id": str(flow_run.id),
            "message": f"training run {flow_run.name} ({flow_run.id}) scheduled on {name} with the analysts' labels"}


def prefect_api_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@dataclass
class Retraining:
    """One press of the button: where it runs, its state and, once done, what it registered."""

    user: str
    started: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC").floor("s"))
    state: str = "running"  # running, scheduled (on the deployment), completed, failed
    message: str = ""
    flow_run_id: str | None = None
    version: str | None = None
    champion: bool | None = None
    n_labels: int | None = None
    n_labels_held_out: int | None = None
    log: str = ""  # the tail of a failed run's output

    @property
    def failed(self) -> bool:
        return self.state == "failed"


class Retrainer:
    """Starts retrainings and keeps the latest ones for the admin page."""

    def __init__(self, cfg: PipelineConfig, db_url: str):
        self.cfg, self.db_url = cfg, db_url
        self.runs: list[Retraining] = []
        self._lock = threading.Lock()

    @property
    def running(self) -> Retraining | None:
        return next((r for r in self.runs if r.state == "running"), None)

    def start(self, user: str) -> Retraining:
        """Retrain now: on the deployment when there is one, else here, in the background. Raises RuntimeError while one runs."""
        with self._lock:
            if self.running is not None:
                raise RuntimeError(f"a retraining started by {self.running.user} at {self.running.started:%H:%M:%S} UTC is still running")
            run = Retraining(user)
            self.runs.insert(0, run)
            del self.runs[10:]
        if prefect_api_configured():
            record = trigger_training(self.cfg)
            if record["outcome"] != "no deployment":
                run.state = "scheduled" if record["outcome"] == "scheduled" else "failed"
                run.message, run.flow_run_id = record["message"], record["flow_run_id"]
                return run
            run.message = record["message"] + ": running the training flow here instead. "
        run.message += "Training flow running in the background with train.labels: feedback (pynomaly run)."
        threading.Thread(target=self._run_here, args=(run,), daemon=True, name="retrain").start()
        return run

    def _run_here(self, run: Retraining) -> None:
        """`pynomaly run` on the config with the analysts' labels, in a process of its own (its own MLflow and Prefect state)."""
        with tempfile.TemporaryDirectory(prefix="pynomaly-retrain-") as folder:
            config, result = Path(folder) / "config.yaml", Path(folder) / "summary.json"
            config.write_text(yaml.safe_dump(feedback_config(self.cfg).model_dump(mode="json"), sort_keys=False))
            command = [sys.executable, "-m", "pynomaly_core.cli", "run", "--config", str(config), "--result", str(result)]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYNOMALY_DB_URL": self.db_url})  # nosec B603
            if done.returncode != 0 or not result.exists():
                run.state, run.log = "failed", (done.stdout + done.stderr)[-LOG_TAIL:]
                run.message = f"the training run failed (exit status {done.returncode}): {_last_line(done.stderr) or 'see its output below'}"
                return
            summary = yaml.safe_load(result.read_text())  # JSON is YAML
        registration, training = summary["registration"], summary["training"]
        run.version, run.champion = registration["version"], registration["promoted"]
        run.n_labels, run.n_labels_held_out = training["n_labels"], training["n_labels_held_out"]
        run.state = "completed"
        run.message = (f"{registration['model_name']} v{run.version} registered, "
                       + ("now the champion" if run.champion else f"not promoted: the champion stays (gate {registration['gate_metric']})")
                       + f"; trained on {run.n_labels} labels, {run.n_labels_held_out} labelled test rows held out for evaluation")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""
