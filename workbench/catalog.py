"""What the Models, Batches and Detectors pages list, read from MLflow and the scored files.

Batches are the files `score`, `monitor` and `stream` leave in `monitoring.scored_dir`
(`<batch>.parquet`, `<batch>.rejected.csv`, `<batch>.drift.html`, `stream/<first>-<last>.parquet`);
the verdicts and model versions come from the MLflow scoring and monitoring runs of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pynomaly_core.scoring import provenance
from pynomaly_core.config import PipelineConfig
from pynomaly_core.detectors import packages
from pynomaly_core.detectors.registry import REGISTRY
from pynomaly_core.data.io import table_stem
from pynomaly_core.tracking.store import store_uri


MAX_RUNS = 5000  # scoring or monitoring runs read per page view


def client(cfg: PipelineConfig) -> MlflowClient:
    return MlflowClient(tracking_uri=store_uri(cfg.tracking))


@dataclass
class ModelVersion:
    name: str
    version: str
    aliases: list[str]
    run_id: str
    experiment_id: str
    detector: str
    strategy: str
    criterion: str
    gate_metric: str
    gate_value: float | None
    feedback_labels: str | None  # how many workbench labels trained it, when any
    created: pd.Timestamp


def model_versions(cfg: PipelineConfig) -> list[ModelVersion]:
    """Every registered version, newest first, with what selected it and its gate metric."""
    mlflow = client(cfg)
    versions = []
    for registered in mlflow.search_registered_models():
        gate_metric = cfg.registry.gate_metric if registered.name == cfg.registry.model_name else "roc_auc"
        aliases_of = {}  # searched versions carry no aliases: the registered model has them
        for alias, number in dict(registered.aliases or {}).items():
            aliases_of.setdefault(str(number), []).append(alias)
        for version in mlflow.search_model_versions(f"name = '{registered.name}'"):
            try:
                run = mlflow.get_run(version.run_id)
            except MlflowException:
                continue  # its run was deleted
            params, tags = run.data.params, run.data.tags
            versions.append(ModelVersion(
                name=registered.name, version=str(version.version), aliases=sorted(aliases_of.get(str(version.version), [])), run_id=version.run_id,
                experiment_id=run.info.experiment_id, detector=params.get("detector", "?"), strategy=tags.get("selection.strategy", "?"),
                criterion=tags.get("selection.criterion", "?"), gate_metric=gate_metric, gate_value=run.data.metrics.get(gate_metric),
                feedback_labels=params.get("feedback.n_labels"), created=pd.Timestamp(version.creation_timestamp, unit="ms"),
            ))
    return sorted(versions, key=lambda v: (v.name, -int(v.version)))


def registered_by_pipeline(cfg: PipelineConfig, model_uri: str) -> bool:
    """Whether the version `models:/NAME/VERSION` names was logged by a run of the pipeline's experiment
    (tracking.experiment), which only the pipeline user may write to: a model another MLflow user registered,
    from runs of its own, is never offered for an API key nor loaded."""
    name, version = model_uri.removeprefix("models:/").rsplit("/", 1)
    mlflow = client(cfg)
    experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    try:
        run_id = mlflow.get_model_version(name, version).run_id
        return experiment is not None and bool(run_id) and mlflow.get_run(run_id).info.experiment_id == experiment.experiment_id
    except MlflowException:  # the version or its run is gone
        return False


@dataclass
class Batch:
    id: str  # the scored file's path inside scored_dir, without .parquet
    source: str  # score, monitor or stream
    n_rows: int
    alert_rate: float
    n_rejected: int
    model_uri: str | None
    drift: str | None  # "drift" with its reasons, "no drift", or None when not judged
    report: Path | None  # the Evidently HTML report
    report_uri: str | None  # the same report in MLflow
    run_id: str | None
    experiment_id: str | None
    modified: pd.Timestamp


def _runs_by_batch(cfg: PipelineConfig, stage: str) -> dict[str, object]:
    """The latest MLflow run of `stage` for each batch, by the scored file's stem."""
    mlflow = client(cfg)
    experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return {}
    # Newest first, so the newest MAX_RUNS are kept and the first run of a batch is its latest.
    runs = mlflow.search_runs([experiment.experiment_id], f"tags.`pynomaly.stage` = '{stage}'", order_by=["attributes.start_time DESC"], max_results=MAX_RUNS)
    latest = {}
    for run in runs:
        if "batch" in run.data.tags:
            latest.setdefault(table_stem(run.data.tags["batch"]), run)
    return latest


def inside_scored_dir(cfg: PipelineConfig, path: Path) -> bool:
    """Whether `path` (built from a batch id a request named, or found in scored_dir) may be read: it stays in
    scored_dir (not "../x", not "/etc/x"), no symbolic link lies on its way there (a link inside could point
    anywhere) and it holds no NUL byte (which the OS refuses with an error, not an answer)."""
    root = Path(cfg.monitoring.scored_dir)
    if "\0" in str(path) or not path.resolve().is_relative_to(root.resolve()):
        return False
    try:
        parts = path.relative_to(root).parts
    except ValueError:  # an absolute path elsewhere
        return False
    if ".." in parts:
        return False
    step = root
    for part in parts:
        step = step / part
        if step.is_symlink():
            return False
    return True


def rejected_file(cfg: PipelineConfig, batch_id: str) -> Path:
    return Path(cfg.monitoring.scored_dir) / f"{batch_id}.rejected.csv"


def rejected_parts(path: Path) -> list[Path]:
    """The CSV file of a batch's rejected rows, or the part files of the folder Spark writes there."""
    if not path.is_dir():
        return [path]
    return [part for part in sorted(path.glob("*.csv")) if part.is_file() and not part.is_symlink() and part.stat().st_size]


def _count_rows(path: Path) -> int:
    """Data rows of a rejected-rows CSV (a file or Spark's folder of parts, each with a header)."""
    total = 0
    for part in rejected_parts(path):
        with open(part, "rb") as handle:
            total += max(sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) - 1, 0)
    return total


def batches(cfg: PipelineConfig) -> list[Batch]:
    root = Path(cfg.monitoring.scored_dir)
    scoring, monitoring = _runs_by_batch(cfg, "scoring"), _runs_by_batch(cfg, "monitoring")
    found = []
    for path in sorted(root.glob("*.parquet")) + sorted(root.glob("stream/*.parquet")):
        if not inside_scored_dir(cfg, path):  # a link to a file elsewhere
            continue
        batch_id = path.relative_to(root).with_suffix("").as_posix()
        flags = pq.read_table(path, columns=["is_anomaly"]).column("is_anomaly").to_numpy()
        scored, judged = scoring.get(batch_id), monitoring.get(batch_id)
        drift = None
        if judged is not None and judged.data.tags.get("drift_detected") in ("true", "false"):
            detected = judged.data.tags["drift_detected"] == "true"
            drift = f"drift: {_signals(judged.data.tags.get('drift_reasons', ''))}" if detected else "no drift"
        report = root / f"{batch_id}.drift.html"
        rejected = rejected_file(cfg, batch_id)
        has_report = report.exists() and inside_scored_dir(cfg, report)
        has_rejected = rejected.exists() and inside_scored_dir(cfg, rejected)
        source = "stream" if batch_id.startswith("stream/") else "monitor" if judged else "score" if scored is None else "scoring flow"
        run = judged or scored
        record = provenance.read(path)  # the version that scored the file, kept with it; older files: their run's tag
        found.append(Batch(
            id=batch_id, source=source, n_rows=len(flags), alert_rate=float(flags.mean()) if len(flags) else 0.0,
            n_rejected=_count_rows(rejected) if has_rejected else 0,
            model_uri=record["model_uri"] if record else run.data.tags.get("model_uri") if run else None, drift=drift, report=report if has_report else None,
            report_uri=f"{judged.info.artifact_uri}/monitoring/{report.name}" if judged and has_report else None,
            run_id=run.info.run_id if run else None, experiment_id=run.info.experiment_id if run else None, modified=pd.Timestamp(path.stat().st_mtime, unit="s"),
        ))
    return sorted(found, key=lambda b: b.modified, reverse=True)


def _signals(reasons: str) -> str:
    """The verdict's reasons (`drift.decide`'s, joined by "; ") in a few words; the drift page has them whole."""
    words = {"feature drift": "features", "score drift": "scores", "alert rate": "alert rate"}
    found = [short for start, short in words.items() for reason in reasons.split("; ") if reason.startswith(start)]
    return ", ".join(dict.fromkeys(found)) or reasons[:80]


def batch_model_uri(cfg: PipelineConfig, batch_id: str) -> str | None:
    """The model version that scored the batch, as its scoring run recorded it (for files written before they kept the record)."""
    run = _runs_by_batch(cfg, "scoring").get(batch_id)
    return run.data.tags.get("model_uri") if run else None


def _runs_here(dependencies) -> dict:
    """Whether this environment has the detector's packages, and if not the command that installs them."""
    missing = packages.missing(dependencies)
    return {"missing": missing, "install": " ; ".join(dict.fromkeys(packages.install_hint(p) for p in missing))}


def detectors(text: str = "", **tags: str) -> list[dict]:
    """The registry with its tags and whether each can run here; `text` matches the name, the other filters a tag's value."""
    rows = [{"name": name, **spec.tags, "default": spec.default, **_runs_here(spec.tags["python_dependencies"])} for name, spec in REGISTRY.items()]
    rows = [r for r in rows if text.lower() in r["name"].lower()]
    return [r for r in rows if all(value in ("", None) or str(r.get(tag)).lower() == value.lower() for tag, value in tags.items())]


def verdict(cfg: PipelineConfig, batch_id: str) -> dict | None:
    """The latest monitoring run's verdict of the batch (its `monitoring/verdict.json`), None when it was never judged."""
    run = _runs_by_batch(cfg, "monitoring").get(batch_id)
    if run is None:
        return None
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client(cfg).download_artifacts(run.info.run_id, "monitoring/verdict.json", folder)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text()) | {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}


def monitoring_history(cfg: PipelineConfig) -> pd.DataFrame:
    """Every monitoring run, oldest first: when, batch, model version, alert rate (and the reference's), drift share, verdict."""
    mlflow = client(cfg)
    experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    columns = ["when", "batch", "version", "n_rows", "alert_rate", "expected", "drift_share", "verdict"]
    if experiment is None:
        return pd.DataFrame(columns=columns)
    runs = mlflow.search_runs([experiment.experiment_id], "tags.`pynomaly.stage` = 'monitoring'", order_by=["attributes.start_time DESC"],
                              max_results=MAX_RUNS)
    n_columns = len(cfg.data.columns)
    rows = []
    for run in runs:
        metrics, tags = run.data.metrics, run.data.tags
        if "alert_rate" not in metrics or "n_rows" not in metrics:
            continue
        rows.append({
            "when": pd.Timestamp(run.info.start_time, unit="ms"), "batch": table_stem(tags.get("batch", "?")),
            "version": tags.get("model_uri", "?").removeprefix("models:/"), "n_rows": int(metrics["n_rows"]),
            "alert_rate": metrics["alert_rate"], "expected": metrics.get("alert_rate_expected", float("nan")),
            # runs logged before drift_share: the drifted columns over the configured columns
            "drift_share": metrics.get("drift_share", metrics.get("n_drifted_columns", 0.0) / n_columns),
            "verdict": "drift" if tags.get("drift_detected") == "true" else "no drift",
        })
    return pd.DataFrame(rows, columns=columns).sort_values("when", ignore_index=True)
