"""Graph detectors (extra `graph`: PyGOD + torch_geometric) on a node table plus an edge list.

Full-batch only. PyGOD's `fit`/`decision_function` always build a `NeighborLoader`, and its
sampler needs `pyg-lib` or `torch-sparse` (no wheels here) even when the batch is the whole
graph. For graphs that fit in memory we hand PyGOD a loader that yields the whole graph once,
which is what `NeighborLoader(data, [-1]*k, batch_size=n_nodes)` yields, without the sampler.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OutlierMixin, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from ..errors import DataError
from .packages import missing_dependency
from .spec import DetectorSpec
from .torch import torch_threads


@dataclass
class Graph:
    """Node features (one row per node, in `node_ids` order) and edges as row positions, shape (2, n_edges)."""

    x: np.ndarray
    edge_index: np.ndarray
    node_ids: np.ndarray

    # Row-like, so CV folds and the tabular reference detectors (which see the node features) take a graph.
    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape

    def __len__(self) -> int:
        return len(self.x)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.x, dtype=dtype)

    def __getitem__(self, rows) -> Graph:
        """The subgraph induced by the nodes at `rows`."""
        rows = np.arange(len(self.x))[rows]
        position = np.full(len(self.x), -1)
        position[rows] = np.arange(len(rows))
        kept = (position[self.edge_index] >= 0).all(axis=0)
        return Graph(self.x[rows], position[self.edge_index[:, kept]], self.node_ids[rows])


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; it has {list(frame.columns)}")


def edge_positions(node_ids, edges: pd.DataFrame, *, id_column: str, source: str = "source", target: str = "target",
                   undirected: bool = True, what: str = "edge list") -> np.ndarray:
    """The edges as node positions, shape (2, n_edges); a DataError names the edges whose ends are not in `node_ids`."""
    _require(edges, [source, target], what)
    node_ids = pd.Index(node_ids)
    duplicated = node_ids[node_ids.duplicated()].unique()
    if len(duplicated):
        raise DataError(f"node table: duplicate {id_column} value(s) {list(duplicated[:5])}")
    position = pd.Series(np.arange(len(node_ids)), index=node_ids)
    src, dst = edges[source].map(position), edges[target].map(position)
    unknown = src.isna() | dst.isna()
    if unknown.any():
        examples = [
            f"row {row}: {edges.at[row, source]!r} -> {edges.at[row, target]!r}" for row in edges.index[unknown][:5]
        ]
        raise DataError(
            f"{what}: {int(unknown.sum())} edge(s) point at nodes missing from the node table's "
            f"'{id_column}' column ({'; '.join(examples)})"
        )
    edge_index = np.vstack([src.to_numpy(dtype=np.int64), dst.to_numpy(dtype=np.int64)]).reshape(2, -1)
    if undirected:
        edge_index = np.unique(np.hstack([edge_index, edge_index[::-1]]), axis=1)
    return edge_index


def load_graph(nodes: pd.DataFrame, edges: pd.DataFrame, *, id_column: str, features: list[str],
               source: str = "source", target: str = "target", undirected: bool = True) -> Graph:
    """Check the node table and the edge list against each other; a clear DataError on any mismatch."""
    _require(nodes, [id_column, *features], "node table")
    values = nodes[features].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1)
    if bad.any():
        rows = list(nodes.index[bad][:5])
        raise DataError(f"node table: row(s) {rows} have missing or non-numeric features in {features}")
    edge_index = edge_positions(nodes[id_column], edges, id_column=id_column, source=source, target=target, undirected=undirected)
    return Graph(values.to_numpy(dtype=np.float64), edge_index, nodes[id_column].to_numpy())


def with_neighbors(valid: pd.DataFrame, all_nodes: pd.DataFrame, edges: pd.DataFrame, *, id_column: str, neighbors: str,
                   source: str = "source", target: str = "target") -> tuple[pd.DataFrame, int]:
    """The valid node rows with a list column `neighbors`; edges are checked against every node the
    table names (valid or rejected), and those touching a rejected node are dropped. Returns the rows
    and how many edges were dropped."""
    _require(all_nodes, [id_column], "node table")
    edge_index = edge_positions(all_nodes[id_column], edges, id_column=id_column, source=source, target=target)
    ids = all_nodes[id_column].to_numpy()
    pairs = pd.DataFrame({"node": ids[edge_index[0]], neighbors: ids[edge_index[1]]})
    kept = pairs["node"].isin(valid[id_column]) & pairs[neighbors].isin(valid[id_column])
    lists = pairs[kept].groupby("node")[neighbors].agg(list)
    found = valid[id_column].map(lists)
    dropped = int((~kept).sum() // 2)  # each undirected edge appears in both directions
    return valid.assign(**{neighbors: [n if isinstance(n, list) else [] for n in found]}), dropped


def induced(nodes: pd.DataFrame, id_column: str, neighbors: str) -> pd.DataFrame:
    """These node rows with their neighbour lists cut to the nodes among them: a graph on its own."""
    present = set(nodes[id_column])
    return nodes.assign(**{neighbors: [[n for n in ns if n in present] for ns in nodes[neighbors]]})


class NodeGraph(TransformerMixin, BaseEstimator):
    """The preprocessing step for graph input: node rows (id, features, neighbour ids in the list
    column `neighbors`) -> `Graph`, the features transformed by `features`, a ColumnTransformer
    fitted on the training nodes."""

    def __init__(self, features=None, id_column="id", neighbors="neighbors"):
        self.features = features
        self.id_column = id_column
        self.neighbors = neighbors

    def fit(self, nodes: pd.DataFrame, y=None):
        self.features_ = clone(self.features).fit(nodes)
        return self

    def transform(self, nodes: pd.DataFrame) -> Graph:
        _require(nodes, [self.id_column, self.neighbors], "node rows")
        pairs = nodes[[self.id_column, self.neighbors]].explode(self.neighbors).dropna()
        edges = pd.DataFrame({"source": pairs[self.id_column].to_numpy(), "target": pairs[self.neighbors].to_numpy()})
        edge_index = edge_positions(nodes[self.id_column], edges, id_column=self.id_column, what=f"'{self.neighbors}' column")
        return Graph(np.asarray(self.features_.transform(nodes), dtype=np.float64), edge_index, nodes[self.id_column].to_numpy())

    def get_feature_names_out(self, input_features=None):
        return self.features_.get_feature_names_out()


@contextmanager
def _full_batch():
    import pygod.detector.base as pygod_base
    import torch

    def whole_graph(data, num_neighbors, batch_size, **_):
        if batch_size < data.num_nodes:
            raise ValueError("only full-batch training is supported (no pyg-lib/torch-sparse): leave batch_size at 0")
        batch = data.clone()
        batch.batch_size, batch.n_id = data.num_nodes, torch.arange(data.num_nodes)
        return [batch]

    original = pygod_base.NeighborLoader
    pygod_base.NeighborLoader = whole_graph
    try:
        yield
    finally:
        pygod_base.NeighborLoader = original


# Full-batch ops grow with the graph: only large graphs gain from several torch threads (DOMINANT,
# 100 epochs on 77 nodes with the other core busy: 0.56 s on one thread, 85 s on two).
SMALL_GRAPH = 10_000


PYGOD_MODELS = {
    "dominant": "DOMINANT",
    "gcnae": "GAE",  # PyGOD's GAE with its default GCN backbone is GCNAE
    "anomalydae": "AnomalyDAE",
    "cola": "CoLA",
    "conad": "CONAD",
    "radar": "Radar",
}
# Left out: DONE/AdONE (~90 s for 20 epochs on 77 nodes here), GUIDE (~60 s), GAAN and GADNR
# (fail in PyGOD 1.1.0 with torch_geometric 2.8.1).


class GraphDetector(OutlierMixin, BaseEstimator):
    """PyGOD node-anomaly detectors behind the detector contract; X is a `Graph`, one score per node.

    Transductive: scoring a graph runs the trained network over that whole graph.
    """

    backend = "pygod"
    input = "graph"
    python_dependencies = ("pygod", "torch_geometric", "torch")
    gpu = True
    proba = True

    def __init__(self, model="dominant", params=None, contamination=0.1, random_state=None):
        self.model = model
        self.params = params
        self.contamination = contamination
        self.random_state = random_state

    def _data(self, graph: Graph):
        import torch
        from torch_geometric.data import Data

        return Data(x=torch.as_tensor(graph.x, dtype=torch.float32), edge_index=torch.as_tensor(graph.edge_index))

    def fit(self, graph: Graph, y=None):
        try:
            import pygod.detector as detectors
        except ModuleNotFoundError as err:
            raise missing_dependency(self.model, err) from None
        from .torch import seed_torch, torch_device

        params = dict(self.params or {})
        device = torch_device(params.pop("device", "auto"))
        seed_torch(self.random_state)
        cls = getattr(detectors, PYGOD_MODELS[self.model])
        kwargs = dict(params, contamination=self.contamination, verbose=0)
        if "gpu" in cls.__init__.__code__.co_varnames:
            kwargs["gpu"] = 0 if device == "cuda" else -1
        with _full_batch(), torch_threads(1 if len(graph) < SMALL_GRAPH else None):
            self.estimator_ = cls(**kwargs).fit(self._data(graph))
        self.n_features_in_ = graph.x.shape[1]
        self.decision_scores_ = self.decision_function(graph)
        self.threshold_ = float(np.quantile(self.decision_scores_, 1.0 - self.contamination))
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        self._sorted_training_scores = np.sort(self.decision_scores_)
        return self

    def decision_function(self, graph: Graph) -> np.ndarray:
        import torch

        check_is_fitted(self, "estimator_")
        if graph.x.shape[1] != self.n_features_in_:
            raise ValueError(f"graph has {graph.x.shape[1]} node features, but the detector was fitted with {self.n_features_in_}")
        # CoLA and others sample while scoring: a fixed seed makes one graph score the same each time.
        with torch.random.fork_rng(), _full_batch(), torch_threads(1 if len(graph) < SMALL_GRAPH else None):
            torch.manual_seed(0 if self.random_state is None else self.random_state)
            return self.estimator_.decision_function(self._data(graph)).double().numpy()

    def predict(self, graph: Graph) -> np.ndarray:
        return (self.decision_function(graph) > self.threshold_).astype(int)

    def predict_proba(self, graph: Graph) -> np.ndarray:
        ranks = np.searchsorted(self._sorted_training_scores, self.decision_function(graph), side="right")
        anomalous = ranks / len(self._sorted_training_scores)
        return np.column_stack([1.0 - anomalous, anomalous])


def _space(name):
    def space(t):
        params = {"epoch": t.suggest_int(f"{name}.epoch", 20, 200, step=20), "lr": t.suggest_float(f"{name}.lr", 1e-3, 1e-2, log=True)}
        if name != "radar":  # Radar has no hidden layer
            params["hid_dim"] = t.suggest_categorical(f"{name}.hid_dim", [16, 32, 64])
        return params

    return space


# `train.detectors: all` on a graph: the three whose ranking held on the test graph (see tests/test_graph.py).
DEFAULT = {"dominant", "gcnae", "anomalydae"}
SPECS = [
    DetectorSpec(name, GraphDetector, name, _space(name), {"epoch": 5 if name == "cola" else 10, "device": "cpu"}, default=name in DEFAULT)
    for name in PYGOD_MODELS
]
