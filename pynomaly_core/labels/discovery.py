"""Active anomaly discovery: the batch's rows ranked by how likely each is an anomaly, given every label so far.

The method is AAD (Das, Wong, Dietterich, Fern, Emmott, "Incorporating Expert Feedback into Active
Anomaly Discovery", ICDM 2016; Das et al., "Active Anomaly Detection via Ensembles", TKDD 2020) on
an isolation forest's leaves, with the settings of the authors' experiment script for the batch
isolation forest (`ad_examples`' `aad.sh`; option defaults in `aad/aad_globals.py`):

- an isolation forest of 100 trees on 256-row subsamples, fitted on the batch itself;
- each row's features are the leaves it falls in, one per tree, each valued minus the leaf's depth
  (IFOR_SCORE_TYPE_NEG_PATH_LEN), the row's vector scaled to unit length (--norm_unit); a row's
  score is w . z(row);
- the weights start uniform, 1/sqrt(leaves);
- after every answer the weights minimise the AAD loss with tau = 0.03: a confirmed row should score
  above the batch's top-3 % quantile and above the row ranked there, a dismissed row below both
  (hinge losses, Ca = Cn = Cx = 1, each averaged over its class), plus ||w - uniform||^2 / (2 sigma2)
  with sigma2 = 0.5, divided by the number of labels (--prior_influence=1: the prior counts less as
  labels accumulate); RMSProp, learning rate 0.001, at most 1000 epochs, the best epoch kept (the
  authors' `sgdRMSProp`), then w scaled to unit length.

`aad/demo_aad.py` differs from the script in those two options (unit-length rows, the prior's
shrinking weight); docs/discovery.md has both measured. Nothing is retrained: a label changes the
weights of the leaves the labelled rows (and the row at the top-3 % rank) fall in, plus the prior's
pull on every weight, and re-ranking the batch is one gather and sum over a rows x trees table.
Every setting above is the authors'; none was tuned on a benchmark.
"""

from __future__ import annotations

import numba
import numpy as np
from sklearn.ensemble import IsolationForest

N_TREES, MAX_SAMPLES = 100, 256
TAU = 0.03  # labelled anomalies should rank within the top 3 % of the batch
SIGMA2 = 0.5  # variance of the Gaussian prior around the uniform weights
LEARNING_RATE, MAX_EPOCHS = 0.001, 1000
RMS_DECAY, RMS_DELTA, CONVERGED = 0.9, 1e-6, 1e-6
# (unit-length rows, prior influence 1 / labels): the experiment script's, and the demo's (kept to reproduce the anchor)
SETTINGS = {"aad.sh": (True, True), "demo_aad": (False, False)}


def fit_forest(X: np.ndarray, seed: int) -> IsolationForest:
    """The isolation forest whose leaves AAD weighs (scikit-learn's, as `ad_examples` wraps it)."""
    return IsolationForest(n_estimators=N_TREES, max_samples=min(MAX_SAMPLES, len(X)), random_state=seed).fit(X)


def leaf_table(forest: IsolationForest, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows x trees: the forest-wide number of the leaf each row falls in; and each leaf's value (minus its depth)."""
    X = np.asarray(X, dtype=np.float32)
    leaves = np.empty((len(X), len(forest.estimators_)), dtype=np.int32)  # 40 MB for 100,000 rows
    values, offset = [], 0
    for t, (tree, features) in enumerate(zip(forest.estimators_, forest.estimators_features_)):
        structure = tree.tree_
        depth = np.zeros(structure.node_count)
        for node in range(structure.node_count):  # children always have larger ids than their parent
            for child in (structure.children_left[node], structure.children_right[node]):
                if child >= 0:
                    depth[child] = depth[node] + 1
        is_leaf = structure.children_left < 0
        compact = np.cumsum(is_leaf) - 1  # node id -> leaf number within the tree
        leaves[:, t] = offset + compact[tree.apply(X[:, features])]
        values.append(-depth[is_leaf])
        offset += int(is_leaf.sum())
    return leaves, np.concatenate(values)


class Discovery:
    """A batch's AAD state: the leaf table, the weights, and the labels given so far (1 anomaly, 0 normal)."""

    def __init__(self, leaves: np.ndarray, leaf_values: np.ndarray, settings: str = "aad.sh"):
        if settings not in SETTINGS:
            raise ValueError(f"discovery settings are one of {sorted(SETTINGS)}, not {settings!r}")
        if leaves.ndim != 2 or leaves.max(initial=-1) >= len(leaf_values) or leaves.min(initial=0) < 0:
            raise ValueError(f"leaves must be rows x trees of leaf numbers below {len(leaf_values)}, got shape {leaves.shape}")
        self.leaves, self.leaf_values, self.n_leaves = leaves, leaf_values, len(leaf_values)
        unit_rows, self.adaptive_prior = SETTINGS[settings]
        self.row_scale = np.ones(len(leaves))
        if unit_rows:
            norms = np.sqrt(_row_scores(leaf_values, leaf_values, leaves, self.row_scale))
            self.row_scale = 1 / np.where(norms > 0, norms, 1)  # a row in root leaves only stays zero
        self.prior = np.full(self.n_leaves, 1 / np.sqrt(self.n_leaves))
        self.reset()

    def reset(self) -> None:
        """Forget every label: the uniform weights again."""
        self.weights = self.prior.copy()
        self.labels: dict[int, int] = {}
        self._moved = np.zeros(self.n_leaves, dtype=bool)  # leaves whose weight the loss has touched
        self.scores = self._score_all()

    @classmethod
    def fit(cls, X: np.ndarray, seed: int, settings: str = "aad.sh") -> Discovery:
        """An isolation forest fitted on the batch `X` (rows x features, numeric), no label yet."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not len(X):
            raise ValueError(f"discovery needs a rows x features array with rows, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            row, column = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"discovery: row {row}, feature {column} is not a finite number")
        return cls(*leaf_table(fit_forest(X, seed), X), settings)

    def _score_all(self) -> np.ndarray:
        return _row_scores(self.weights, self.leaf_values, self.leaves, self.row_scale)

    def order(self) -> np.ndarray:
        """Positions of the unlabelled rows, likeliest anomaly first (ties: the earlier row)."""
        unlabelled = np.ones(len(self.scores), dtype=bool)
        unlabelled[list(self.labels)] = False
        rows = np.flatnonzero(unlabelled)
        return rows[np.argsort(-self.scores[rows], kind="stable")]

    def label(self, answers: dict[int, int]) -> None:
        """Record answers {position: 1 anomaly / 0 normal} (a later answer replaces an earlier one) and
        re-weigh with every label so far; `scores` then holds the new ranking."""
        for position, answer in answers.items():
            if answer not in (0, 1):
                raise ValueError(f"row {position}: a label is 1 (anomaly) or 0 (normal), not {answer!r}")
            if not 0 <= position < len(self.scores):
                raise ValueError(f"row {position} is not in the batch of {len(self.scores)} rows")
            self.labels[int(position)] = int(answer)
        if self.labels:
            self.weights = self._update()
            self.scores = self._score_all()

    def _update(self) -> np.ndarray:
        """One AAD weight update (the `ad_examples` `aad_weight_update` with `aad.sh`'s options).

        Only the leaves of labelled rows and of tau rows ever feel the loss; every other leaf feels the
        prior alone and so keeps the value all such leaves share. They are optimised as one coordinate
        standing for all of them (the same RMSProp steps, counted that many times in the loss and the
        norm): the same result as the full vector, at the cost of the leaves that matter."""
        rows = np.fromiter(self.labels, dtype=np.int64)
        y = np.fromiter(self.labels.values(), dtype=np.int64)
        n = len(self.scores)
        top_k = int(round(TAU * n))
        q_tau = np.percentile(self.scores, (1 - top_k / n) * 100)  # fixed during the update
        tau_row = np.argsort(-self.scores, kind="stable")[min(top_k, n - 1)]
        active = np.unique(np.concatenate([np.flatnonzero(self._moved), self.leaves[rows].ravel(), self.leaves[tau_row]]))
        others = self.n_leaves - len(active)
        other_value = self.weights[np.setdiff1d(np.arange(self.n_leaves), active)[0]] if others else 0.0
        # Coordinates: the active leaves, then one for all the others; the labelled rows, then the tau row.
        count = np.append(np.ones(len(active)), others)
        constrained = np.append(rows, tau_row)
        w = np.append(self.weights[active], other_value)
        values = self.leaf_values[self.leaves[constrained]] * self.row_scale[constrained, None]
        best = _rmsprop(w, np.searchsorted(active, self.leaves[constrained]), values, y == 1, q_tau, self.prior[0], count,
                        1 / len(rows) if self.adaptive_prior else 1.0)
        best = best / np.sqrt(count @ (best * best))
        weights = np.full(self.n_leaves, best[-1])
        weights[active] = best[:-1]
        self._moved[active] = True
        return weights


@numba.njit(cache=True)
def _row_scores(weights, leaf_values, leaves, row_scale):
    """Each row's score, its scale times the sum over its leaves of weight x value: no rows x trees temporaries,
    which would be two 76 MiB gathers per re-rank of a 100,000-row batch."""
    scores = np.empty(leaves.shape[0])
    for i in range(leaves.shape[0]):
        total = 0.0
        for t in range(leaves.shape[1]):
            total += weights[leaves[i, t]] * leaf_values[leaves[i, t]]
        scores[i] = row_scale[i] * total
    return scores


@numba.njit(cache=True)
def _scores(w, L, V):
    s = np.zeros(L.shape[0])
    for i in range(L.shape[0]):
        for t in range(L.shape[1]):
            s[i] += w[L[i, t]] * V[i, t]
    return s


@numba.njit(cache=True)
def _loss(w, s, anomaly, n_anomalies, n_normals, q_tau, prior, count, influence):
    """The AAD loss: hinge losses of the labelled rows against q_tau and the tau row's score s[-1], and the prior times its influence."""
    loss, s_tau = 0.0, s[-1]
    for i in range(len(anomaly)):
        if anomaly[i]:
            loss += (max(q_tau - s[i], 0.0) + max(s_tau - s[i], 0.0)) / n_anomalies
        else:
            loss += (max(s[i] - q_tau, 0.0) + max(s[i] - s_tau, 0.0)) / n_normals
    return loss + influence * np.sum(count * (w - prior) ** 2) / (2 * SIGMA2)


@numba.njit(cache=True)
def _rmsprop(w, L, V, anomaly, q_tau, prior, count, influence):
    """`ad_examples`' sgdRMSProp on the AAD loss, the labelled rows in one batch; the best epoch's weights.
    L, V: the leaves (in w's coordinates) and values of the labelled rows, then of the tau row."""
    n_anomalies, n_normals = max(1, anomaly.sum()), max(1, len(anomaly) - anomaly.sum())
    w, r = w.copy(), np.zeros(len(w))
    s = _scores(w, L, V)
    loss = _loss(w, s, anomaly, n_anomalies, n_normals, q_tau, prior, count, influence)
    best, best_loss, losses = w.copy(), np.inf, np.zeros(MAX_EPOCHS)
    tau = len(anomaly)
    for epoch in range(MAX_EPOCHS):
        # d loss / d w: a broken constraint adds -z(row) (anomaly) or +z(row) (normal); the tau row's z the opposite.
        gradient = influence * (w - prior) / SIGMA2
        tau_coefficient = 0.0
        for i in range(tau):
            if anomaly[i]:
                coefficient = -((s[i] < q_tau) + (s[i] < s[tau])) / n_anomalies
                tau_coefficient += (s[i] < s[tau]) / n_anomalies
            else:
                coefficient = ((s[i] >= q_tau) + (s[i] >= s[tau])) / n_normals
                tau_coefficient -= (s[i] >= s[tau]) / n_normals
            if coefficient != 0.0:
                for t in range(L.shape[1]):
                    gradient[L[i, t]] += coefficient * V[i, t]
        if tau_coefficient != 0.0:
            for t in range(L.shape[1]):
                gradient[L[tau, t]] += tau_coefficient * V[tau, t]
        r = RMS_DECAY * r + (1 - RMS_DECAY) * gradient * gradient
        w = w - LEARNING_RATE / np.sqrt(RMS_DELTA + r) * gradient
        previous = loss
        s = _scores(w, L, V)
        loss = _loss(w, s, anomaly, n_anomalies, n_normals, q_tau, prior, count, influence)
        losses[epoch] = loss
        if loss < best_loss:
            best, best_loss = w.copy(), loss
        # The stops of avg_loss_check: the means of the last 20 epochs and of the 20 before the last differ by (newest - oldest) / 20.
        flat = epoch >= 20 and abs(loss - losses[epoch - 20]) / 20 < CONVERGED
        if loss < CONVERGED or abs(loss - previous) < CONVERGED or flat:
            break
    return best
