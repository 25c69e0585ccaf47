"""One function per pipeline stage: `stage(cfg) -> Result`.

Each reads its inputs from the paths in the config, writes its outputs there and logs to
MLflow. DVC runs them through `pynomaly stage NAME`; the Prefect tasks wrap the same functions.
`train` opens the pipeline's MLflow run; the later stages reopen it by the id it records.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import mlflow
import numpy as np
import optuna
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import ModelSignature
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from pydantic import BaseModel
from sklearn.pipeline import Pipeline

from . import __version__
from .evaluation import metrics as evaluation
from .labels import feedback
from .tracking import model_size, store as tracking
from .config import NEIGHBORS, PipelineConfig
from .detectors.graph import induced, with_neighbors
from .data.series import series_windows
from .evaluation.explain import explain as shap_explain, explain_nodes, lime_explain, plot_importance
from .data.io import TableWriter, read_parquet, read_table, release_memory, source_name, write_table
from .scoring import model as model_module
from .detectors import packages, registry
from .scoring.model import OUTPUT_SCHEMA, model_artifacts
from .data.preprocessing import build_preprocessor, features, input_columns, split, transform
from .selection import make_selector, selector_class
from .selection.base import Selector
from .selection.metaselect import KNOWLEDGE_BASE
from .selection.study import FINISHED, open_study
from .data.validation import ValidationResult, check_rejected_share, expectation_report, validate as validate_frame, validate_blocks


class ValidateResult(BaseModel):
    source: str
    n_rows: int
    n_valid: int
    n_rejected: int
    quarantine: str
    expectations_success: bool
    edges_dropped: int | None = None  # a graph's edges that touch a rejected node


class PreprocessResult(BaseModel):
    n_train: int
    n_test: int
    n_features_out: int


class TrainResult(BaseModel):
    run_id: str
    detector: str
    params: dict
    selection_score: float
    criterion: str
    study_name: str
    n_trials: int
    n_pruned: int
    n_failed: int
    fit_seconds: float
    n_labels: int = 0  # labelled rows the selection saw (the analysts' with train.labels feedback, else data.label_column's)
    n_labels_held_out: int = 0  # analysts' labels on test rows: evaluation only, not trained on
    labels_from: str | None = None  # "the analysts' labels" or the label column's name


class EvaluateResult(BaseModel):
    metrics: dict[str, float]


class ExplainResult(BaseModel):
    method: str
    rows: list[dict]
    global_importance: dict[str, float]


class RegisterResult(BaseModel):
    model_name: str
    version: str
    model_uri: str
    aliases: list[str]
    promoted: bool
    gate_metric: str
    gate_value: float
    previous_champion: str | None
    previous_value: float | None
    model_size_mb: float | None = None
    model_size_warning: str | None = None


def _releases_memory(stage):
    """The stage, then the memory it freed handed back to the system (`io.release_memory`)."""
    @functools.wraps(stage)
    def run(cfg: PipelineConfig):
        try:
            return stage(cfg)
        finally:
            release_memory()
    return run


def _write_json(model: BaseModel | dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    text = model.model_dump_json(indent=2) if isinstance(model, BaseModel) else json.dumps(model, indent=2)
    Path(path).write_text(text + "\n")


def _training(cfg: PipelineConfig) -> TrainResult:
    return TrainResult.model_validate_json(Path(cfg.paths.training).read_text())


@_releases_memory
def validate(cfg: PipelineConfig) -> ValidateResult:
    source = source_name(cfg.data.source, cfg.data.query)
    frame = read_table(cfg.data.source, cfg.data.query, cfg.data)
    if cfg.data.series is not None:  # a series is validated and scored as its windows
        frame = series_windows(frame, **cfg.data.series.model_dump())
    edges_dropped = None
    if cfg.data.graph is None:
        # The valid rows go to the file a block at a time: the coerced copies exist for one block, not the table.
        with TableWriter(cfg.paths.validated) as valid_out:
            rejected = []
            for block in validate_blocks(frame, cfg.data, source=source):
                valid_out.write(block.valid)
                rejected.append(block.rejected)
            result = ValidationResult(frame.iloc[:0], pd.concat(rejected, ignore_index=True), len(frame))
            expectations = expectation_report(frame, cfg.data)
            _report_validation(cfg, result, expectations, source)  # too many rejected rows: no validated file
    else:  # a graph's valid nodes keep the edges among them: validated whole
        result = validate_frame(frame, cfg.data, source=source)
        expectations = expectation_report(frame, cfg.data)
        _report_validation(cfg, result, expectations, source)
        graph = cfg.data.graph
        valid, edges_dropped = with_neighbors(
            result.valid, frame, read_table(graph.edges), id_column=cfg.data.id_column, neighbors=NEIGHBORS, source=graph.source, target=graph.target
        )
        write_table(valid, cfg.paths.validated)
    return ValidateResult(
        source=source,
        **result.report(include_share=False),
        quarantine=cfg.paths.quarantine,
        expectations_success=expectations["success"],
        edges_dropped=edges_dropped,
    )


def _report_validation(cfg: PipelineConfig, result: ValidationResult, expectations: dict, source: str) -> None:
    """The quarantine and the report, then the rejected share's check."""
    write_table(result.rejected, cfg.paths.quarantine)
    _write_json({"pandera": result.report(), "great_expectations": expectations}, cfg.paths.validation_report)
    check_rejected_share(result, cfg.data.max_rejected_share, source)


@_releases_memory
def preprocess(cfg: PipelineConfig) -> PreprocessResult:
    frame = read_parquet(cfg.paths.validated)
    train, test = split(frame, cfg.data, cfg.preprocess, cfg.seed)
    del frame  # the two parts hold every row
    write_table(test, cfg.paths.test)
    n_test = len(test)
    del test
    write_table(train, cfg.paths.train)
    limit = cfg.preprocess.fit_rows
    # A graph's transformer is fitted on every node; a table's on a seeded sample when it is large: the numeric
    # pipeline's fit makes three float64 copies of the rows it is given (the rows, the imputer's and the scaler's output).
    sample = train if cfg.data.graph is not None or limit is None or len(train) <= limit else train.sample(limit, random_state=cfg.seed)
    preprocessor = build_preprocessor(cfg.data, cfg.preprocess).fit(features(sample, cfg.data))
    Path(cfg.paths.preprocessor).parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(preprocessor, cfg.paths.preprocessor)
    return PreprocessResult(n_train=len(train), n_test=n_test, n_features_out=len(preprocessor.get_feature_names_out()))


def _trial_logger(experiment_id: str, parent_run_id: str):
    """An Optuna callback recording each trial as a child run of the training run."""
    client = MlflowClient()

    def log_trial(study, trial) -> None:
        run = client.create_run(experiment_id, run_name=f"trial-{trial.number}", tags={MLFLOW_PARENT_RUN_ID: parent_run_id})
        now = int(time.time() * 1000)
        metrics = [Metric("fold_mean", value, now, step) for step, value in trial.intermediate_values.items()]
        if trial.value is not None:
            metrics.append(Metric("selection_score", trial.value, now, 0))
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in trial.params.items()],
            tags=[RunTag("trial_state", trial.state.name), RunTag("optuna_study", study.study_name)],
        )
        client.set_terminated(run.info.run_id, "FINISHED" if trial.state.name == "COMPLETE" else "KILLED")

    return log_trial


@dataclass
class Search:
    """What every process running trials of one study needs."""
    X: np.ndarray
    y: np.ndarray | None
    study_name: str
    data_md5: str


def _fit_rows(cfg: PipelineConfig) -> pd.DataFrame:
    """The rows the detector is fitted on: the training rows, or for a graph every node (graph
    detectors are transductive; labels are never used for a graph, so test labels stay unseen).
    With `train.labels: feedback`, the analysts' confirmed and dismissed batch rows join them."""
    rows = read_parquet(cfg.paths.validated if cfg.data.graph else cfg.paths.train)
    if cfg.train.labels != "feedback":
        return rows
    labelled = feedback.labelled_rows(cfg)
    # A labelled row that is also a test row would be trained on and then evaluated: it stays an evaluation row only.
    # One that is also a training row replaces that row's unlabelled copy.
    evaluation = row_keys(read_parquet(cfg.paths.test), cfg)
    held_out = row_keys(labelled, cfg).isin(evaluation).to_numpy()
    kept = labelled[~held_out]
    rows = rows[~row_keys(rows, cfg).isin(row_keys(kept, cfg)).to_numpy()]
    rows = pd.concat([rows.assign(**{feedback.LABEL_COLUMN: 0}), kept], ignore_index=True)
    rows.attrs[feedback.N_STALE] = labelled.attrs[feedback.N_STALE]  # for the run's record (_log_feedback)
    rows.attrs[feedback.N_HELD_OUT] = int(held_out.sum())
    return rows


def row_keys(rows: pd.DataFrame, cfg: PipelineConfig) -> pd.Series:
    """One hash per row of its feature values: the same row whether read from a split or from a label's stored values."""
    return pd.util.hash_pandas_object(features(rows, cfg.data)[list(cfg.data.columns)], index=False)


def _whole_graph(cfg: PipelineConfig, preprocessor):
    """Every validated node's id, and the preprocessed graph they form (nodes are scored and explained inside it)."""
    nodes = read_parquet(cfg.paths.validated)
    return pd.Index(nodes[cfg.data.id_column]), preprocessor.transform(features(nodes, cfg.data))


def _scores(cfg: PipelineConfig, pipeline, rows: pd.DataFrame, whole_graph=None) -> np.ndarray:
    """The pipeline's scores of `rows`; graph nodes are scored inside the whole validated graph
    (`_whole_graph`'s, read here unless given)."""
    if cfg.data.graph is None:
        return pipeline[-1].decision_function(transform(pipeline[0], rows, cfg.data))
    node_ids, graph = whole_graph or _whole_graph(cfg, pipeline[0])
    return pipeline[-1].decision_function(graph)[node_ids.get_indexer(rows[cfg.data.id_column])]


def _search(cfg: PipelineConfig, preprocessor, train_rows: pd.DataFrame) -> Search:
    X = transform(preprocessor, train_rows, cfg.data)
    label = feedback.LABEL_COLUMN if cfg.train.labels == "feedback" else cfg.data.label_column
    y = train_rows[label].to_numpy(dtype=int) if cfg.train.use_labels else None
    data_md5 = tracking.file_md5(cfg.paths.train)
    # Same data and search settings -> same study, so an interrupted study resumes where it stopped.
    search = cfg.train.model_dump(exclude={"timeout", "progress_bar", "storage", "workers", "dask_address"})
    if cfg.train.labels == "feedback":  # new labels, new study
        search["feedback"] = hashlib.sha256(train_rows[[feedback.BATCH_COLUMN, label]].to_csv().encode()).hexdigest()
    if cfg.threshold.target_fpr is not None:  # the study then runs on the rows left after the calibration split
        search["threshold"] = cfg.threshold.model_dump()
    if selector_class(cfg.train, cfg.data.input).uses_knowledge_base:
        # The few-label grid's candidates follow the knowledge base and the time budget.
        search["knowledge_base"], search["timeout"] = tracking.file_md5(str(KNOWLEDGE_BASE)), cfg.train.timeout
    study_name = f"{cfg.name}-{hashlib.sha256(json.dumps([data_md5, search, cfg.seed], sort_keys=True).encode()).hexdigest()[:12]}"
    return Search(X=X, y=y, study_name=study_name, data_md5=data_md5)


def parallel_search(cfg: PipelineConfig) -> bool:
    """Whether `train.workers` processes share the selection: only an Optuna search can be shared."""
    return cfg.train.workers > 1 and selector_class(cfg.train, cfg.data.input).shares_study


def _selector(cfg: PipelineConfig, search: Search, callbacks=(), **train_updates) -> Selector:
    """The strategy's selector, with PYNOMALY_OPTUNA_STORAGE (set by the local services) as the study database."""
    train = cfg.train.model_copy(update={"storage": tracking.optuna_storage(cfg.train), **train_updates})
    return make_selector(train, cfg.threshold, cfg.seed, study_name=search.study_name, input=cfg.data.input, callbacks=callbacks)


def create_study(cfg: PipelineConfig) -> str:
    """Create the training study (and its tables) once, before parallel workers join it at the same moment."""
    search = _search(cfg, joblib.load(cfg.paths.preprocessor), _fit_rows(cfg))
    open_study(tracking.optuna_storage(cfg.train), search.study_name, cfg.seed, cfg.train.pruning)
    return search.study_name


def tune(cfg: PipelineConfig, worker: int) -> str:
    """Join the training study as one of `train.workers` parallel processes and run trials until it is full.

    `train` then finds the trials done and only picks the best; returns the study name.
    """
    search = _search(cfg, joblib.load(cfg.paths.preprocessor), _fit_rows(cfg))
    _selector(cfg, search, progress_bar=False).join(search.X, search.y, worker)  # workers run without a terminal
    return search.study_name


def training_dataset(cfg: PipelineConfig, train_rows: pd.DataFrame) -> mlflow.data.pandas_dataset.PandasDataset:
    """The training rows as the model takes them (float64 numbers, NaN for missing), and the label.

    The label is logged as float64 too: unknown labels are missing values, which an integer column
    cannot hold (MLflow hints so for any integer column of a logged schema).
    """
    rows = features(train_rows, cfg.data)
    label = cfg.data.label_column
    if label:
        rows[label] = train_rows[label].astype("float64")
    return mlflow.data.from_pandas(rows, source=tracking.table_source(cfg.data.source, cfg.data.query), name=f"{cfg.name}-train", targets=label,
                                   digest=tracking.pandas_digest(rows))


def _log_feedback(fit_rows: pd.DataFrame) -> None:
    """Which workbench labels this training used: counts as params (n_labels: those trained on; n_held_out: labelled
    test rows, left to evaluation; n_stale: unversioned labels left out, their batch file rewritten since), the batches as a tag."""
    labelled = fit_rows[fit_rows[feedback.BATCH_COLUMN].notna()]
    n_anomalies = int((labelled[feedback.LABEL_COLUMN] == 1).sum())
    mlflow.log_params({"feedback.n_labels": len(labelled), "feedback.n_anomalies": n_anomalies, "feedback.n_normal": len(labelled) - n_anomalies,
                       "feedback.n_stale": fit_rows.attrs[feedback.N_STALE], "feedback.n_held_out": fit_rows.attrs[feedback.N_HELD_OUT]})
    mlflow.set_tag("feedback.batches", ",".join(sorted(labelled[feedback.BATCH_COLUMN].unique()))[:5000])


def _label_counts(cfg: PipelineConfig, train_rows: pd.DataFrame, search: Search) -> dict:
    if search.y is None:  # unsupervised: no label reached the selection
        return {"n_labels": 0, "n_labels_held_out": 0}
    if cfg.train.labels == "feedback":
        return {"n_labels": int(train_rows[feedback.BATCH_COLUMN].notna().sum()), "n_labels_held_out": train_rows.attrs[feedback.N_HELD_OUT],
                "labels_from": "the analysts' labels"}
    return {"n_labels": int(train_rows[cfg.data.label_column].notna().sum()), "labels_from": f"column {cfg.data.label_column}"}


@_releases_memory
def train(cfg: PipelineConfig) -> TrainResult:
    tracking.setup(cfg.tracking)
    train_rows = _fit_rows(cfg)
    preprocessor = joblib.load(cfg.paths.preprocessor)

    with mlflow.start_run(run_name=f"{cfg.name}-training") as run:
        # The logged dataset's float64 copy of the rows is gone before X, their transform, is made.
        mlflow.log_input(training_dataset(cfg, train_rows), context="training")
        search = _search(cfg, preprocessor, train_rows)
        X, study_name, data_md5 = search.X, search.study_name, search.data_md5
        mlflow.set_tags({
            "git_commit": tracking.git_commit(),
            "data_md5": tracking.file_md5(cfg.data.source) if Path(cfg.data.source).is_file() else data_md5,
            "config_digest": cfg.digest(),
            "pynomaly_version": __version__,
            "optuna_study": study_name,
        })
        mlflow.log_dict(cfg.model_dump(mode="json"), "config.yaml")
        mlflow.log_artifact(cfg.paths.validation_report, "validation")
        if cfg.train.labels == "feedback":
            _log_feedback(train_rows)
        label_counts = _label_counts(cfg, train_rows, search)
        del train_rows  # the fit needs X and the labels only
        started = time.perf_counter()
        log_trial = _trial_logger(run.info.experiment_id, run.info.run_id)
        selection = _selector(cfg, search, callbacks=[log_trial]).select(X, search.y)
        detector = selection.model
        if parallel_search(cfg):  # the Dask workers' trials become child runs here, where the parent run is
            study = optuna.load_study(study_name=study_name, storage=tracking.optuna_storage(cfg.train))
            for trial in study.get_trials(deepcopy=False, states=FINISHED):
                if "worker" in trial.user_attrs:
                    log_trial(study, trial)
        fit_seconds = time.perf_counter() - started
        pipeline = Pipeline([("preprocess", preprocessor), ("detector", detector)])
        Path(cfg.paths.model).parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(pipeline, cfg.paths.model)
        mlflow.log_params({"detector": selection.detector, **{f"detector.{k}": v for k, v in selection.params.items()}})
        mlflow.set_tags({"selection.strategy": cfg.train.strategy, "selection.criterion": selection.criterion})  # what chose this model
        if selection.trial_ensemble:  # weighed against the best trial, chosen or not
            mlflow.log_params({f"trial_ensemble.{k}": v for k, v in selection.trial_ensemble.items() if k != "score"})
            mlflow.log_metric("trial_ensemble_score", selection.trial_ensemble["score"])
        mlflow.log_metrics({"selection_score": selection.score, "threshold": detector.threshold_, "search_seconds": fit_seconds})
        if selection.skipped:  # candidates screened out before fitting, with the reason
            mlflow.log_dict(selection.skipped, "selection/skipped.json")
        result = TrainResult(
            run_id=run.info.run_id,
            detector=selection.detector,
            params=selection.params,
            selection_score=selection.score,
            criterion=selection.criterion,
            study_name=study_name,
            n_trials=selection.n_trials,
            n_pruned=selection.n_pruned,
            n_failed=selection.n_failed,
            fit_seconds=round(fit_seconds, 3),
            **label_counts,
        )
    _write_json(result, cfg.paths.training)
    return result


def _test_scores(cfg: PipelineConfig):
    pipeline = joblib.load(cfg.paths.model)
    test = read_parquet(cfg.paths.test)
    labels = test[cfg.data.label_column].to_numpy(dtype=int) if cfg.data.label_column else None
    return pipeline, test, _scores(cfg, pipeline, test), labels


@_releases_memory
def evaluate(cfg: PipelineConfig) -> EvaluateResult:
    tracking.setup(cfg.tracking)
    pipeline, test, scores, labels = _test_scores(cfg)
    threshold = pipeline[-1].threshold_
    result = EvaluateResult(metrics=evaluation.metrics(scores, threshold, labels))
    figures, plots = Path(cfg.paths.figures), Path(cfg.paths.plots)
    evaluation.plot_histogram(scores, threshold, labels, figures / "score_histogram.png")
    if labels is not None and 0 < labels.sum() < len(labels):
        for name, table in evaluation.curves(scores, labels).items():
            write_table(table, plots / f"{name}.csv")
            x, y = table.columns
            evaluation.plot_curve(table, x, y, f"{name.upper()} on test rows", figures / f"{name}.png")
    _write_json(result.metrics, cfg.paths.metrics)
    with mlflow.start_run(run_id=_training(cfg).run_id):
        mlflow.log_metrics(result.metrics)
        mlflow.log_artifacts(str(figures), "evaluation")
    return result


@_releases_memory
def explain(cfg: PipelineConfig) -> ExplainResult:
    tracking.setup(cfg.tracking)
    pipeline, test = joblib.load(cfg.paths.model), read_parquet(cfg.paths.test)
    preprocessor, detector = pipeline[0], pipeline[-1]
    whole_graph = _whole_graph(cfg, preprocessor) if cfg.data.graph else None  # read once: scored and explained
    scores = _scores(cfg, pipeline, test, whole_graph)
    top = np.argsort(-scores, kind="stable")[: cfg.explain.top_k]
    train_rows = read_parquet(cfg.paths.train)
    background = train_rows.sample(min(cfg.explain.background, len(train_rows)), random_state=cfg.seed)
    names = list(preprocessor.get_feature_names_out())
    if cfg.data.graph is None:
        method = lime_explain if cfg.explain.method == "lime" else shap_explain
        explanation = method(
            detector, preprocessor.transform(features(test.iloc[top], cfg.data)), preprocessor.transform(features(background, cfg.data)), names
        )
    else:  # nodes are explained inside the whole graph
        node_ids, graph = whole_graph
        position = node_ids.get_indexer
        explanation = explain_nodes(
            detector, graph, position(test[cfg.data.id_column].iloc[top]), graph.x[position(background[cfg.data.id_column])], names
        )
    ids = (test[cfg.data.id_column] if cfg.data.id_column else test.index).tolist()  # plain Python values for JSON
    rows = [
        {
            "id": ids[i],
            "score": float(scores[i]),
            "top_features": [{"feature": f, "contribution": round(v, 6)} for f, v in explanation.top_features(k)],
        }
        for k, i in enumerate(top)
    ]
    result = ExplainResult(method=explanation.method, rows=rows, global_importance=explanation.global_importance())
    _write_json(result, cfg.paths.explanation)
    # The plot goes to MLflow only: a file beside the JSON would be an output dvc.yaml cannot name.
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=_training(cfg).run_id):
        mlflow.log_artifact(cfg.paths.explanation, "explanation")
        mlflow.log_artifact(str(plot_importance(explanation, Path(tmp) / "explanation.png")), "explanation")
    return result


def _pip_requirements(training: TrainResult) -> list[str]:
    from importlib.metadata import version

    names = ["mlflow", "pyod", "scikit-learn", "pandas", "numpy", "pydantic", "pyyaml", "joblib", "cloudpickle"]
    detectors = training.params.get("members", [training.detector])  # an ensemble needs what its members need
    for package in (p for name in detectors for p in registry.get(name).tags["python_dependencies"]):
        names += packages.distributions(package)
    return [f"{name}=={version(name)}" for name in dict.fromkeys(names)]


def reference_sample(cfg: PipelineConfig, test: pd.DataFrame) -> pd.DataFrame:
    """Up to `monitoring.reference_rows` test rows with the final model's scores and alerts: what drift
    is measured against. Rows the model never saw, as new batches are: KNN and LOF score their own
    training rows low, so against those every new batch would look drifted."""
    pipeline = joblib.load(cfg.paths.model)
    sample = test.sample(min(cfg.monitoring.reference_rows, len(test)), random_state=cfg.seed)
    scores = _scores(cfg, pipeline, sample)
    reference = sample[list(cfg.data.columns)].reset_index(drop=True)
    return reference.assign(score=scores, is_anomaly=(scores > pipeline[-1].threshold_).astype("int64"))


def register(cfg: PipelineConfig) -> RegisterResult:
    tracking.setup(cfg.tracking)
    training = _training(cfg)
    test = read_parquet(cfg.paths.test)
    example = test[input_columns(cfg.data)].head(5)
    if cfg.data.graph is not None:  # the example must be a graph on its own
        example = induced(example, cfg.data.id_column, NEIGHBORS)
    gate_value = {**json.loads(Path(cfg.paths.metrics).read_text()), "selection_score": training.selection_score}.get(cfg.registry.gate_metric)
    if gate_value is None:
        raise ValueError(f"registry.gate_metric '{cfg.registry.gate_metric}' was not computed; see {cfg.paths.metrics}")
    size = model_size.check(cfg.paths.model, cfg.registry.max_model_mb)
    if size.warning:
        warnings.warn(size.warning, stacklevel=2)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=training.run_id):
        mlflow.log_metric("model_size_mb", size.mb)
        if size.warning:
            mlflow.set_tag("model_size.warning", size.warning)
            mlflow.log_dict(size.parts_mb, "model_size_parts_mb.json")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Path(model_module.__file__),
            artifacts=model_artifacts(cfg.paths.model, cfg.data, tmp, reference_sample(cfg, test)),
            # No input schema: MLflow's type enforcement would refuse a bad cell before the model's own
            # validation (data_config.yaml, the pandera schema) could name its row and column.
            signature=ModelSignature(inputs=None, outputs=OUTPUT_SCHEMA),
            input_example=example,
            registered_model_name=cfg.registry.model_name,
            pip_requirements=_pip_requirements(training),
        )
    version = str(info.registered_model_version)
    decision = tracking.champion_gate(cfg.registry.model_name, version, cfg.registry.gate_metric, gate_value, cfg.registry.min_improvement)
    result = RegisterResult(
        model_name=cfg.registry.model_name,
        version=version,
        model_uri=f"models:/{cfg.registry.model_name}/{version}",
        aliases=decision.aliases,
        promoted=decision.promoted,
        gate_metric=cfg.registry.gate_metric,
        gate_value=gate_value,
        previous_champion=decision.previous_champion,
        previous_value=decision.previous_value,
        model_size_mb=size.mb,
        model_size_warning=size.warning,
    )
    _write_json(result, cfg.paths.registration)
    return result


STAGES = {"validate": validate, "preprocess": preprocess, "train": train, "evaluate": evaluate, "explain": explain, "register": register}
