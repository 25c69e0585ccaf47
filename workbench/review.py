"""The review queue: a scored batch's unreviewed rows, by default the likeliest anomaly given every label so
far first (active anomaly discovery, `pynomaly_core.labels.discovery`: each confirm or dismiss re-ranks
it), or in the teach-the-model order on request; one page at a time, with each row's top SHAP features
and its values against the reference."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from threadpoolctl import threadpool_limits

from pynomaly_core.config import PipelineConfig
from pynomaly_core.evaluation import explain
from pynomaly_core.labels.feedback import ANOMALY, NORMAL, BatchVersion, batch_file, read_batch, row_ids
from pynomaly_core.evaluation.explain import lime_explanation
from pynomaly_core.labels.discovery import Discovery
from pynomaly_core.labels.review import member_scores, review_order
from pynomaly_core.errors import DataError
from pynomaly_core.scoring import provenance
from pynomaly_core.tracking.champion import champion_version_uri
from pynomaly_core.data.preprocessing import features
from pynomaly_core.scoring.files import load_model

from . import catalog

logger = logging.getLogger(__name__)

# Background rows of the queue's SHAP values. The permutation explainer (every detector but an
# isolation forest) costs rows x background x permutations x (2 x features + 1) model evaluations.
SHAP_BACKGROUND = 10
# How many models and queues a workbench keeps, the ones used last: a queue holds its batch's rows
# (100k rows of 30 features are ~30 MB with their scores and ids, and 40 MB of discovery leaf table), a model its pipeline.
MODELS_KEPT = 4
# The queue's orders: the analyst picks one; discovery is the default (benchmarks/discovery.py, docs/discovery.md).
ORDERS = {
    "discovery": "likeliest anomaly first, given every confirm and dismiss on this batch (re-ranked after each)",
    "teach": "the label that would teach the next model most first: the members' disagreement minus the distance to the threshold",
}
QUEUES_KEPT = 8


@dataclass(frozen=True)
class View:
    """What the analyst asked the queue to show: filters, order and a search of row ids."""

    flagged: bool = False  # flagged rows only
    label: str = ""  # rows whose latest label is this (reviewed rows); without it, the rows still to review
    sort: str = "queue"  # "queue": the queue's order; "score": highest score first
    order: str = "discovery"  # the queue's order, one of ORDERS
    q: str = ""  # row ids containing this text, reviewed or not

    def params(self, **changes) -> dict:
        """The view as query parameters (those that differ from the default), for links that keep it."""
        values = {**self.__dict__, **changes}
        defaults = {"sort": "queue", "order": "discovery"}
        return {k: ("1" if v is True else v) for k, v in values.items() if v not in (False, "", None) and defaults.get(k) != v}


@dataclass
class Queue:
    batch_id: str
    model_uri: str  # models:/NAME/VERSION
    frame: pd.DataFrame  # the scored rows, in file order
    ids: pd.Series  # each row's label id (feedback.row_ids)
    discovery: Discovery | None  # None for a graph model: its rows are then shown by score
    teach: np.ndarray  # every position in the teach-the-model order (labels.review.review_order)
    threshold: float
    version: BatchVersion  # labels given on another version of the file are not this queue's
    percentiles: np.ndarray | None  # each row's score as a percentile of the model's reference scores (None: no reference)
    model_known: bool  # the file (or its scoring run) names the model; false: an old file, read with today's champion
    explained: dict[int, list[tuple[str, float]]] = field(default_factory=dict)  # position -> top SHAP features
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ranking(self, order: str = "discovery") -> np.ndarray:
        """Every position in `order` (one of ORDERS), the one to review first first."""
        with self.lock:
            if order == "teach":
                return self.teach
            if self.discovery is not None:  # every row, reviewed ones too (a label filter shows them), in discovery's order
                return np.argsort(-self.discovery.scores, kind="stable")
            return self.by_score()

    def by_score(self) -> np.ndarray:
        return np.argsort(-self.frame["score"].to_numpy(), kind="stable")

    def follow(self, labels: pd.DataFrame) -> None:
        """Take in the decisions in `labels` (row_id, label: each row's latest, as feedback.latest_labels gives
        them) and re-rank when they changed. Confirmed rows count as anomalies, dismissed ones as normal;
        unsure rows only leave the queue."""
        with self.lock:
            if self.discovery is not None:
                positions = pd.Series(np.arange(len(self.ids)), index=self.ids.to_numpy())
                positions = positions[~positions.index.duplicated()]  # a repeated id names its first row, as `position` does
                decided = labels[labels["label"].isin([ANOMALY, NORMAL]) & labels["row_id"].isin(positions.index)]
                answers = dict(zip(positions[decided["row_id"]].tolist(), (decided["label"] == ANOMALY).astype(int).tolist()))
                if answers != self.discovery.labels:
                    if set(self.discovery.labels) - set(answers):  # a decision taken back: start again from the prior
                        self.discovery.reset()
                    self.discovery.label(answers)

    @property
    def model_name(self) -> str:
        return self.model_uri.removeprefix("models:/").rsplit("/", 1)[0]

    @property
    def model_version(self) -> str:
        return self.model_uri.rsplit("/", 1)[1]

    def select(self, labels: pd.Series, view: View) -> np.ndarray:
        """The positions `view` shows, in its order. `labels`: each labelled row's latest label, by row id."""
        order = self.ranking(view.order) if view.sort == "queue" else self.by_score()
        given = self.ids.map(labels).to_numpy()  # NaN where unlabelled
        keep = np.ones(len(self.frame), dtype=bool)
        if view.flagged:
            keep &= self.frame["is_anomaly"].to_numpy() == 1
        if view.label:
            keep &= given == view.label
        elif not view.q:  # the queue: rows without a decision yet (unsure is one); the reviewed are listed below it
            keep &= pd.isna(given)
        if view.q:
            keep &= self.ids.str.contains(view.q, case=False, regex=False).to_numpy()
        return order[keep[order]]

    def progress(self, labels: pd.Series) -> dict:
        """How many rows, and flagged rows, carry a label."""
        labelled = self.ids.isin(labels.index).to_numpy()
        flagged = self.frame["is_anomaly"].to_numpy() == 1
        return {"flagged": int(flagged.sum()), "flagged_reviewed": int((flagged & labelled).sum()),
                "rows": len(self.frame), "reviewed": int(labelled.sum())}

    def page(self, number: int, size: int, positions: np.ndarray) -> pd.DataFrame:
        """Page `number` (from 1) of `positions` (a view of the queue): its rows with `position`, `row_id` and `percentile`."""
        positions = positions[(number - 1) * size: number * size]
        return self.frame.iloc[positions].assign(position=positions, row_id=self.ids.iloc[positions].to_numpy(), percentile=self.percentile(positions))

    def percentile(self, positions):
        """The rows' score percentiles among the model's reference rows (NaN when the model has no reference)."""
        return np.full(len(positions), np.nan) if self.percentiles is None else self.percentiles[positions]

    def position(self, row_id: str) -> int:
        matches = np.flatnonzero(self.ids.to_numpy() == row_id)
        if not len(matches):
            raise DataError(f"batch {self.batch_id} has no row {row_id}")
        return int(matches[0])


def scored_by(cfg: PipelineConfig, batch_id: str) -> str | None:
    """The version that scored the batch: the record kept with its file, else its scoring run's tag (files written before
    the record existed); None when neither names one."""
    record = provenance.read(batch_file(cfg, batch_id))
    return record["model_uri"] if record else catalog.batch_model_uri(cfg, batch_id)


class Reviewer:
    """Keeps the models and batch queues used last (MODELS_KEPT, QUEUES_KEPT); the queue of a batch is
    rebuilt when its file changes. The caches are shared by the server's threads, under one lock."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self._models: OrderedDict[str, object] = OrderedDict()
        self._queues: OrderedDict[str, tuple[tuple[int, int], Queue]] = OrderedDict()
        self._explainers: OrderedDict[str, explain.ShapExplainer] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _keep(cache: OrderedDict, key, value, size: int) -> None:
        """Store `value` as the most recently used entry, dropping the least recently used beyond `size` (lock held)."""
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > size:
            cache.popitem(last=False)

    def model(self, uri: str):
        with self._lock:  # held while loading, so concurrent requests load a model once
            if uri in self._models:
                self._models.move_to_end(uri)
            else:
                self._keep(self._models, uri, load_model(uri, self.cfg.tracking), MODELS_KEPT)
            return self._models[uri]

    def queue(self, batch_id: str) -> Queue:
        path = batch_file(self.cfg, batch_id)
        if not catalog.inside_scored_dir(self.cfg, path) or not path.exists():
            raise DataError(f"no scored batch {batch_id}")
        stat = path.stat()
        written = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._queues.get(batch_id)
            if cached and cached[0] == written:
                self._queues.move_to_end(batch_id)
                return cached[1]
        # Built outside the lock (it needs it for the model, and reading a batch takes a while); two
        # requests for a changed batch may both build it, and the last one is kept.
        recorded = scored_by(self.cfg, batch_id)
        uri = recorded or champion_version_uri(self.cfg.registry.model_name)
        frame, version = read_batch(path)
        python_model = self.model(uri).unwrap_python_model()
        threshold = float(python_model.pipeline[-1].threshold_)
        # The queue's rule (pynomaly_core.labels.discovery): an isolation forest fitted on the batch's
        # preprocessed rows, its leaves re-weighed after every decision.
        discovery, members = None, None
        if python_model.data_config.graph is None:
            discovery = Discovery.fit(python_model.pipeline[0].transform(features(frame, python_model.data_config)), self.cfg.seed)
            members = member_scores(python_model.pipeline, features(frame, python_model.data_config))
        teach = review_order(frame["score"].to_numpy(), members, threshold)
        queue = Queue(batch_id, uri, frame, row_ids(frame, self.cfg.data.id_column), discovery, teach, threshold, version,
                      self.percentiles(uri, frame["score"].to_numpy()), recorded is not None)
        with self._lock:
            self._keep(self._queues, batch_id, (written, queue), QUEUES_KEPT)
        return queue

    def explain(self, queue: Queue, positions: np.ndarray, top: int = 3) -> dict[int, list[tuple[str, float]]]:
        """Top SHAP features of these rows (computed once per row)."""
        missing = [int(p) for p in positions if int(p) not in queue.explained]
        if missing:
            names = self.feature_names(queue)
            for position, values in zip(missing, self.shap_values(queue, missing)):
                order = np.argsort(-values)[:top]
                queue.explained[position] = [(names[i], float(values[i])) for i in order]
        return {int(p): queue.explained[int(p)] for p in positions}

    def shap_values(self, queue: Queue, positions: list[int]) -> np.ndarray:
        explainer = self.explainer(queue.model_uri)
        python_model = self.model(queue.model_uri).unwrap_python_model()
        rows = python_model.pipeline[0].transform(features(queue.frame.iloc[positions], python_model.data_config))
        # One native thread: SHAP calls the detector once per few hundred rows, and on a busy machine the BLAS/OpenMP
        # threads of KNN's and LOF's distance computations wait for each other: a page of 25 rows of a rank ensemble
        # of IForest, LOF and KNN took 28 s with them and 3.3 s without (benchmarks/workbench_shap.py, load average 12 on 2 cores).
        with threadpool_limits(1):
            return explainer(rows).values

    def explainer(self, uri: str) -> explain.ShapExplainer:
        """The model's SHAP explainer, set up once (explain.ShapExplainer), over SHAP_BACKGROUND of its reference rows."""
        with self._lock:
            if uri in self._explainers:
                self._explainers.move_to_end(uri)
                return self._explainers[uri]
        python_model = self.model(uri).unwrap_python_model()
        data = python_model.data_config
        if data.graph is not None:
            raise DataError("SHAP values of single graph nodes are not shown here: see the training run's explanation")
        preprocessor, detector = python_model.pipeline[0], python_model.pipeline[-1]
        reference = self.reference(uri)
        background = preprocessor.transform(features(reference.sample(min(SHAP_BACKGROUND, len(reference)), random_state=self.cfg.seed), data))
        names = [str(name).split("__", 1)[-1] for name in preprocessor.get_feature_names_out()]  # "num__mean_radius" -> "mean_radius"
        built = explain.ShapExplainer(detector, background, names)  # outside the lock: a forest's takes a second
        with self._lock:
            self._keep(self._explainers, uri, built, MODELS_KEPT)
        return built

    def warm_up(self) -> None:
        """Load the champion and set up its SHAP explainer now, before the workbench answers, so that a fresh server's
        first page does not: MLflow's model load (3 to 4 s here) and a forest's tree explainer (0.7 to 1.3 s) were
        most of its 3.3 to 6.9 s (benchmarks/workbench_shap.py, docs/operations.md). A permutation explainer's masking,
        which numba compiles on first use (11 to 38 s), compiles in the background instead of holding up the start."""
        try:
            method = self.explainer(champion_version_uri(self.cfg.registry.model_name)).method
        except DataError as err:  # no champion yet, a graph model, no reference rows: nothing to prepare
            logger.info("no SHAP warm-up: %s", err)
            return
        except MlflowException as err:  # an unreachable tracking server: the pages that need none still work
            logger.warning("no SHAP warm-up, MLflow did not answer: %s", err.message)
            return
        if method == "permutation":
            threading.Thread(target=explain.warm_up, daemon=True, name="shap-warm-up").start()

    def lime(self, queue: Queue, position: int) -> list[tuple[str, float]]:
        """LIME for one row on demand, against the reference as background."""
        python_model = self.model(queue.model_uri).unwrap_python_model()
        data = python_model.data_config
        if data.graph is not None:
            raise DataError("LIME of single graph nodes is not shown here")
        rows = pd.concat([queue.frame.iloc[[position]], self.reference(queue.model_uri)], ignore_index=True)
        explained = lime_explanation(python_model.pipeline, features(rows, data), 0, seed=self.cfg.seed)
        return [(str(name).split("__", 1)[-1], weight) for name, weight in explained]

    def feature_names(self, queue: Queue) -> list[str]:
        return self.explainer(queue.model_uri).feature_names

    def reference(self, uri: str) -> pd.DataFrame:
        path = self.model(uri).unwrap_python_model().reference_path
        if path is None:
            raise DataError(f"{uri} was registered without a reference sample")
        return pd.read_parquet(path)

    def percentiles(self, uri: str, scores: np.ndarray) -> np.ndarray | None:
        """Each score's percentile among the reference rows' scores: one scale across versions whose raw scores differ."""
        try:
            reference = np.sort(self.reference(uri)["score"].to_numpy())
        except DataError:
            return None
        return 100.0 * np.searchsorted(reference, scores, side="right") / len(reference)

    def row_against_reference(self, queue: Queue, position: int) -> pd.DataFrame:
        """Each feature's value in the row beside the reference's 1st, 50th and 99th percentile, min and max."""
        columns = list(self.model(queue.model_uri).unwrap_python_model().data_config.columns)
        reference = self.reference(queue.model_uri)
        row = queue.frame.iloc[position]
        table = []
        for column in columns:
            values = reference[column]
            numeric = pd.api.types.is_numeric_dtype(values)
            q = values.quantile([0.01, 0.5, 0.99]).to_numpy() if numeric else [None] * 3
            value = row[column]
            outside = numeric and pd.notna(value) and not (values.min() <= value <= values.max())
            unusual = numeric and pd.notna(value) and not (q[0] <= value <= q[2])
            table.append({"feature": column, "value": value, "min": values.min() if numeric else None, "p01": q[0], "median": q[1],
                          "p99": q[2], "max": values.max() if numeric else None, "outside": bool(outside), "unusual": bool(unusual)})
        return pd.DataFrame(table)
