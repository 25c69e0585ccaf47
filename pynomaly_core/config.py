"""The pipeline configuration: one pydantic model, read from `configs/<name>.yaml`.

The same YAML file is the DVC params file and the default of the Prefect flow parameter,
so every parameter is defined once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LABEL_METRICS = {"roc_auc", "pr_auc", "precision_at_n", "f1"}
NEIGHBORS = "neighbors"  # graph node rows carry their edges as a list of neighbour ids in this column


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnSpec(Strict):
    type: Literal["float", "int", "str", "bool"] = "float"
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    allowed: list[str | int | float] | None = None


def window_columns(window: int) -> list[str]:
    """A series window's columns, oldest first; lag_0 is the current value."""
    return [f"lag_{k}" for k in range(window - 1, -1, -1)]


class SeriesConfig(Strict):
    """A series (timestamp + value columns) read as sliding windows: one row per timestamp."""

    timestamp: str
    value: str
    window: int = Field(ge=2, description="values per row: the current one and the window-1 before it")


class GraphConfig(Strict):
    """A graph: `data.source` is the node table (one row per `data.id_column`), plus an edge list."""

    edges: str = Field(description="CSV or Parquet edge list")
    source: str = "source"
    target: str = "target"


TableFormat = Literal["csv", "jsonl", "parquet", "feather", "orc", "excel", "hdf5"]


class ReadOptions(Strict):
    """How a table file is read: by its suffix unless `format` is set; which sheet or key where a file holds several."""

    format: TableFormat | None = Field(None, description="csv, jsonl, parquet, feather, orc, excel or hdf5; default: from the suffix")
    sheet: str | int | None = Field(None, description="excel: the sheet's name or 0-based position (default: the first)")
    key: str | None = Field(None, description="hdf5: the table's key (default: the file's only one)")


class EngineOptions(Strict):
    """Where a batch is scored: in this process (pandas), or on a Spark or Dask cluster (Parquet input)."""

    name: Literal["pandas", "spark", "dask"] = "pandas"
    spark_master: str = Field("local[*]", description="spark: the master URL")
    scheduler: str | None = Field(None, description="dask: the scheduler's address; default: a local cluster of `workers` processes")
    workers: int = Field(2, ge=1, description="dask without a scheduler: worker processes of the local cluster")


class DataConfig(ReadOptions):
    source: str = Field(description="a table file (see the README's formats), a folder or glob of Parquet files, or a SQLAlchemy URL when `query` is set")
    query: str | None = Field(None, description="SQL run on `source` for the rows")
    id_column: str | None = Field(None, description="identifies a row in explanations and scores; never a feature")
    label_column: str | None = Field(None, description="1 = anomaly; feeds evaluation, and selection only with train.use_labels")
    columns: dict[str, ColumnSpec] = Field({}, description="the feature columns and their rules (derived for a series)")
    max_rejected_share: float = Field(0.1, ge=0, le=1, description="validation fails when a larger share of rows breaks a rule")
    series: SeriesConfig | None = None
    graph: GraphConfig | None = None

    @property
    def input(self) -> str:
        """The detector input tag this data needs: tabular, series or graph."""
        return "series" if self.series else "graph" if self.graph else "tabular"

    @model_validator(mode="after")
    def _series_windows(self) -> DataConfig:
        if self.series is not None and self.graph is not None:
            raise ValueError("data: set either series or graph, not both")
        if self.series is not None:
            lags = window_columns(self.series.window)
            if self.columns and list(self.columns) != lags:
                raise ValueError(f"data.columns must be left out for a series (they are the windows {lags[0]}..{lags[-1]})")
            self.columns = {name: ColumnSpec() for name in lags}
            if self.id_column not in (None, self.series.timestamp):
                raise ValueError(f"data.id_column must be the series timestamp '{self.series.timestamp}' or left out")
            self.id_column = self.series.timestamp
        elif not self.columns:
            raise ValueError("data.columns: name at least one feature column")
        if self.graph is not None:
            if self.id_column is None:
                raise ValueError("data.id_column: a graph needs the node id column its edges refer to")
            if NEIGHBORS in self.columns:
                raise ValueError(f"data.columns: '{NEIGHBORS}' is reserved for a node's neighbour ids")
        return self


class PreprocessConfig(Strict):
    test_size: float = Field(0.3, gt=0, lt=1, description="share of rows held out for evaluation")
    numeric_impute: Literal["median", "mean"] = Field("median", description="fills a missing number (text: the most frequent value)")
    scaler: Literal["standard", "robust", "minmax"] = Field("robust", description="numeric scaling, fitted on the training rows")
    fit_rows: int | None = Field(200_000, gt=0, description="the scaler and imputers are fitted on at most this many training rows, "
                                 "a seeded sample (their medians and quantiles need no more); null: every row")


class TrainConfig(Strict):
    strategy: Literal["default", "meta", "consensus"] = Field(
        "default",
        description="default: IForest, with labels blended with a positive-unlabelled learner (tabular, detectors: all); "
        "meta: learned label-free ranking; consensus: Optuna search. See docs/model-selection.md",
    )
    ensemble_size: int = Field(
        3, ge=1, description="meta: IForest and the best-predicted others in the label-free rank ensemble; consensus: best trials rank-averaged, kept when it wins (1 = off)"
    )
    meta_candidates: int | None = Field(None, ge=1, description="meta with labels: top-ranked knowledge-base models tried (None: all)")
    detectors: list[str] | Literal["all"] = Field(
        "all", description="'all' = the fast default set (see `pynomaly detectors`); deep, slow and graph detectors only by name"
    )
    n_trials: int = Field(30, ge=1, description="Optuna trials of a consensus search; meta with labels tries at most this many candidates")
    timeout: float | None = Field(
        None, gt=0, description="seconds for the whole study; meta also skips models whose predicted fit (from the knowledge base) takes longer"
    )
    cv_folds: int = Field(3, ge=2, description="folds each trial is scored on")
    pruning: bool = True
    use_labels: bool = Field(False, description="let data.label_column steer selection (otherwise it only evaluates)")
    labels: Literal["column", "feedback"] = Field(
        "column", description="feedback: select with the analysts' workbench labels (confirmed and dismissed rows of scored batches) instead of data.label_column"
    )
    metric: Literal["roc_auc", "pr_auc"] = Field("roc_auc", description="selection objective with labels")
    contamination: float = Field(0.1, gt=0, le=0.5, description="expected anomaly share: unless threshold.target_fpr, the threshold is this quantile of training scores")
    storage: str = Field("sqlite:///mlflow/optuna.db", description="Optuna RDB storage, any SQLAlchemy URL")
    progress_bar: bool = True
    workers: int = Field(1, ge=1, description="parallel trial processes; above 1 they run on a Dask cluster and share the study in `storage`")
    dask_address: str | None = Field(None, description="scheduler of an existing Dask cluster; default: a LocalCluster of `workers` processes")


class ThresholdConfig(Strict):
    """How `threshold_` (and so `is_anomaly`) is set; see docs/model-selection.md."""

    target_fpr: float | None = Field(
        None, gt=0, lt=0.5, description="false-positive rate to aim for with a conformal threshold; null: the train.contamination quantile"
    )
    calibration_share: float = Field(0.2, gt=0, lt=1, description="share of training rows held aside to calibrate target_fpr")


class ExplainConfig(Strict):
    method: Literal["shap", "lime"] = Field("shap", description="shap, or lime (extra `explain`; not for graph input)")
    top_k: int = Field(10, ge=1, description="test anomalies explained")
    background: int = Field(50, ge=5, description="background rows (SHAP's masker, LIME's sampling statistics): more is slower and steadier")


class RegistryConfig(Strict):
    model_name: str = Field(description="registered MLflow model; scoring uses models:/NAME@champion")
    gate_metric: str = Field("roc_auc", description="a new version becomes champion when it beats the champion on this metric")
    min_improvement: float = Field(0.0, description="by at least this much")
    max_model_mb: float = Field(50.0, gt=0, description="a larger saved model is registered with a warning naming its largest part")


class TrackingConfig(Strict):
    uri: str = Field("sqlite:///mlflow/mlflow.db", description="MLFLOW_TRACKING_URI overrides it")
    artifact_root: str = "mlflow/artifacts"
    experiment: str = "pynomaly"


class StreamConfig(Strict):
    redis_url: str = "redis://127.0.0.1:6379/0"
    input: str = Field("pynomaly:events", description="stream of records, one field per column")
    output: str = Field("pynomaly:scores", description="stream of results: event_id, id, score, is_anomaly, model")
    dead_letter: str = Field("pynomaly:dead-letter", description="rejected events: their fields as given, event_id and _errors (the reasons)")
    group: str = "pynomaly"
    batch_size: int = Field(200, ge=1, description="micro-batch: entries read and scored together")
    block_ms: int = Field(1000, ge=0)
    claim_idle_ms: int = Field(30000, ge=0, description="entries pending this long with a dead consumer are taken over")


class MonitoringConfig(Strict):
    reference_rows: int = Field(500, ge=10, description="held-out test rows logged with the model as the drift reference")
    feature_alpha: float = Field(0.05, gt=0, lt=1, description="family-wise: each column's K-S test runs at alpha / n_columns")
    score_alpha: float = Field(0.01, gt=0, lt=1, description="K-S test of batch scores against reference scores")
    score_psi: float = Field(0.25, gt=0, description="population stability index of the scores above which they drifted")
    alert_rate_alpha: float = Field(0.01, gt=0, lt=1, description="Fisher's exact test of the anomaly share against the reference's")
    min_batch_rows: int = Field(30, ge=1, description="smaller batches are scored but not judged for drift")
    retrain_on: list[Literal["features", "scores", "alert_rate"]] = ["features", "scores", "alert_rate"]
    training_deployment: str = Field("training/training", description="run when retraining is due; else an event is emitted")
    scored_dir: str = "data/scored"
    store_url: str | None = Field(None, description="SQLAlchemy URL: scored rows are also appended to `store_table` there")
    store_table: str = "scored_rows"
    notify: list[str] = Field(
        [], description="Apprise URLs told when a batch drifts, its alert rate leaves its band or it fails; secrets as ${ENV_VAR}, expanded when sending"
    )
    notify_retries: int = Field(3, ge=0, description="further attempts when a notification is not delivered")
    notify_retry_delay: float = Field(10.0, ge=0, description="seconds between those attempts")
    mlflow_ui: str = Field("http://127.0.0.1:5000", description="the MLflow UI alert links point to (a http(s) tracking URI is used instead)")
    stream: StreamConfig = StreamConfig()

    @field_validator("notify")
    @classmethod
    def _no_secrets_in_yaml(cls, urls: list[str]) -> list[str]:
        """Apprise knows which parts of its URLs are secret: those must come from the environment."""
        import apprise

        for url in urls:
            if "$" in url:
                continue  # checked when expanded, at send time
            plugin = apprise.Apprise.instantiate(url)
            if plugin is None:
                raise ValueError(f"'{url}' is not a notification URL Apprise knows (https://github.com/caronc/apprise/wiki)")
            if plugin.url(privacy=True) != plugin.url(privacy=False):
                raise ValueError(f"'{plugin.url(privacy=True)}' holds a secret; write it as ${{ENV_VAR}} and set the variable where the flow runs")
        return urls


class FeedbackConfig(Strict):
    url: str = Field(
        "sqlite:///mlflow/workbench.db", description="SQLAlchemy URL of the workbench database (labels, users, API keys, audit log); PYNOMALY_DB_URL overrides it"
    )


class PathsConfig(Strict):
    validated: str
    quarantine: str
    validation_report: str
    train: str
    test: str
    preprocessor: str
    model: str
    training: str
    metrics: str
    plots: str
    figures: str
    explanation: str
    registration: str


class PipelineConfig(Strict):
    name: str = Field(description="names the MLflow runs and datasets and the Optuna study")
    seed: int = Field(42, description="fixes splits, sampling and searches")
    data: DataConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    explain: ExplainConfig = ExplainConfig()
    registry: RegistryConfig
    tracking: TrackingConfig = TrackingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    paths: PathsConfig

    @model_validator(mode="after")
    def _labels_where_needed(self) -> PipelineConfig:
        if self.train.labels == "feedback":
            self.train.use_labels = True  # the workbench's labels steer selection as a label column would
        if self.data.label_column is None:
            if self.train.use_labels and self.train.labels == "column":
                raise ValueError("train.use_labels is true but data.label_column is not set")
            if self.registry.gate_metric in LABEL_METRICS:
                raise ValueError(
                    f"registry.gate_metric '{self.registry.gate_metric}' needs data.label_column; "
                    "use 'selection_score' for unlabelled data"
                )
        if self.data.graph is not None and self.train.use_labels:
            # Graph detectors are fitted on every node (transductively), test nodes included.
            raise ValueError("train.use_labels is not supported for graph input: the detectors are fitted on every node")
        elif self.data.label_column in self.data.columns:
            raise ValueError(f"data.label_column '{self.data.label_column}' must not also be a feature column")
        return self

    @model_validator(mode="after")
    def _calibration_rows_exist(self) -> PipelineConfig:
        # A graph's detectors score the very nodes they were fitted on: none is left to calibrate on.
        if self.data.graph is not None and self.threshold.target_fpr is not None:
            raise ValueError("threshold.target_fpr is not supported for graph input: the detectors are fitted on every node")
        return self

    @model_validator(mode="after")
    def _lime_on_rows(self) -> PipelineConfig:
        # LIME perturbs one row at a time; a node's score depends on the whole graph.
        if self.data.graph is not None and self.explain.method == "lime":
            raise ValueError("explain.method 'lime' is not supported for graph input; use 'shap'")
        return self

    def digest(self, *sections: str) -> str:
        """A short stable hash of the named sections (all of them when none are named)."""
        dumped = self.model_dump(include=set(sections) or None)
        return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:12]


class ConfigError(ValueError):
    pass


def load_config(path: str | Path) -> PipelineConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{path}: {problems}") from None
