"""The Optuna search (CASH): the `consensus` strategy, and the labelled objective meta-selection's few-label grid uses.

Label-free criterion (the default): *consensus agreement*. On each of `cv_folds` folds a
fixed, diverse reference pool (IForest, COPOD, HBOS, KNN, PCA with default parameters) is
fitted on the other folds and its scores on the held-out fold are rank-averaged into a
consensus. A candidate is fitted the same way and scored by the Spearman correlation of its
held-out scores with that consensus; the objective is the mean over folds. Ensembles of
diverse detectors are robust on average (ADBench, Han et al. 2022), and agreement with one is
the "model centrality" criterion studied by Ma, Zhao & Akoglu (2023) for unsupervised model
selection. It needs no labels and rewards detectors whose ranking generalises to unseen rows.

With `train.use_labels`, the objective is the ROC-AUC (or PR-AUC) of the labelled anomalies
instead. A candidate that never sees labels is fitted once on every row and judged on all of
them; semi-supervised detectors (pu_logistic, XGBOD) join the candidates and are
cross-validated, fitted with the labels of the fit folds only. Each fold is reported to Optuna,
so a pruner stops hopeless candidates after the first fold.

After the study, a rank ensemble of the `ensemble_size` best distinct trials is scored with the
same objective on the same folds, and chosen only when it beats the best trial.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import optuna
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from ..config import TrainConfig
from ..detectors import registry
from ..detectors.graph import Graph
from ..detectors.spec import DetectorSpec
from .base import ENSEMBLE, Selection, Selector, ensemble_spec
from .study import FINISHED, TRIAL_ERRORS, connection_guard, open_study, run_trials
from ..tracking.store import absolute_sqlite

REFERENCE_POOL = ("iforest", "copod", "hbos", "knn", "pca")
LABEL_METRICS = {"roc_auc": roc_auc_score, "pr_auc": average_precision_score}


def labels_held_out(y: np.ndarray | None) -> bool:
    """Whether cross-validation can hold out labelled anomalies: every held-out fold needs one."""
    return y is not None and int(np.sum(y == 1)) >= 2


def make_folds(X: np.ndarray, y: np.ndarray | None, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(X, Graph):  # graph detectors are transductive: fitted on every node and score them all
        every_node = np.arange(len(X))
        return [(every_node, every_node)]
    if y is None:
        return list(KFold(n_folds, shuffle=True, random_state=seed).split(X))
    # With a single labelled anomaly, score the rows fitted on: unsupervised detectors never see
    # labels, so this ranks without leaking them (semi-supervised ones are left out then).
    if not labels_held_out(y):
        every_row = np.arange(len(X))
        return [(every_row, every_row)]
    n_splits = min(n_folds, int(np.sum(y == 1)))
    return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y))


def consensus_scores(X: np.ndarray, folds, contamination: float, seed: int) -> list[np.ndarray]:
    """Per fold: the mean rank of the reference pool's scores on the held-out rows."""
    consensus = []
    for fit_rows, held_out in folds:
        ranks = []
        for name in REFERENCE_POOL:
            try:
                scores = registry.get(name).build({}, contamination, seed).fit(X[fit_rows]).decision_function(X[held_out])
            except TRIAL_ERRORS:  # e.g. PCA's weighted scores are infinite on constant columns
                continue
            ranks.append(rankdata(scores))
        consensus.append(np.mean(ranks, axis=0))
    return consensus


def suggest(trial: optuna.Trial, candidates: dict[str, DetectorSpec]) -> tuple[str, dict]:
    name = trial.suggest_categorical("detector", list(candidates))
    return name, candidates[name].search_space(trial)


def best_configuration(frozen: optuna.trial.FrozenTrial, candidates: dict[str, DetectorSpec]) -> tuple[str, dict]:
    """Rebuild the detector name and parameters of a finished trial from its recorded choices."""
    return suggest(optuna.trial.FixedTrial(frozen.params), candidates)


def make_evaluator(X, y, folds, contamination, seed, metric, training_scores: dict | None = None):
    """`evaluate(spec, params)` yields the selection criterion of one candidate fold by fold.

    Each fold's candidate is fitted on the fold's fit rows (with their labels, and only theirs,
    when it is semi-supervised) and judged on its held-out rows: by agreement with the reference
    consensus without labels, by `metric` with them. A candidate fitted once on every row leaves
    its training scores in `training_scores` (when given) under `id(spec)`.
    """
    consensus = None if y is not None else consensus_scores(X, folds, contamination, seed)

    def finite(spec: DetectorSpec, scores: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"{spec.name} gave non-finite scores")
        return scores

    def evaluate(spec: DetectorSpec, params: dict):
        if y is not None and not spec.needs_labels:
            # It never sees the labels, so it is fitted once on every row (a graph: every node, as
            # its one fold would) and judged on every labelled anomaly: folds would hold one or two.
            detector = spec.build(params, contamination, seed).fit(X)
            if training_scores is not None:
                training_scores[id(spec)] = detector.decision_scores_
            yield LABEL_METRICS[metric](y, finite(spec, detector.decision_scores_))
            return
        for step, (fit_rows, held_out) in enumerate(folds):
            detector = spec.build(params, contamination, seed).fit(X[fit_rows], y[fit_rows] if spec.needs_labels else None)
            scores = finite(spec, detector.decision_function(X[held_out]))
            if consensus is None:
                yield LABEL_METRICS[metric](y[held_out], scores)
            else:
                yield spearmanr(scores, consensus[step]).statistic

    return evaluate


def make_objective(evaluate, candidates: dict[str, DetectorSpec], prior=None):
    """`prior(name, value)`, when given, turns a candidate's measured criterion into the objective."""

    def objective(trial: optuna.Trial) -> float:
        name, params = suggest(trial, candidates)
        fold_values = []
        started = time.perf_counter()
        for step, value in enumerate(evaluate(candidates[name], params)):
            fold_values.append(value)
            trial.report(float(np.mean(fold_values)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("fit_seconds", round(time.perf_counter() - started, 4))
        if prior is None:
            return float(np.mean(fold_values))
        trial.set_user_attr("measured", float(np.mean(fold_values)))
        return float(prior(name, np.mean(fold_values)))

    return objective


def top_configurations(study: optuna.Study, candidates: dict[str, DetectorSpec], k: int) -> list[tuple[str, dict]]:
    """The `k` best distinct (detector, parameters) among the completed trials, best first."""
    completed = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.value, reverse=True)
    distinct: dict[str, tuple[str, dict]] = {}
    for trial in completed:
        name, params = best_configuration(trial, candidates)
        distinct.setdefault(json.dumps([name, params], sort_keys=True), (name, params))
        if len(distinct) == k:
            break
    return list(distinct.values())


def with_trial_ensemble(selection: Selection, study: optuna.Study, candidates: dict[str, DetectorSpec], size: int, evaluate) -> Selection:
    """Score the rank ensemble of the `size` best distinct trials like a trial; it replaces the best trial only when it beats it."""
    configurations = top_configurations(study, candidates, size)
    if len(configurations) < 2:
        return selection
    params = {"members": [name for name, _ in configurations], "member_params": [p for _, p in configurations]}
    score = float(np.mean(list(evaluate(ensemble_spec(**params), {}))))
    chosen = score > selection.score
    record = {**params, "score": score, "chosen": chosen}
    study.set_user_attr("trial_ensemble", record)  # kept with the study, beside its trials
    if not chosen:
        return dataclasses.replace(selection, trial_ensemble=record)
    return dataclasses.replace(selection, detector=ENSEMBLE, params=params, score=score, trial_ensemble=record)


def best_trial_selection(study: optuna.Study, candidates: dict[str, DetectorSpec], criterion: str, storage: str) -> Selection:
    """The best trial of the study, and its counts."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    if optuna.trial.TrialState.COMPLETE not in states:
        raise RuntimeError(f"study '{study.study_name}': no trial completed ({len(states)} tried); see the failed trials in {storage}")
    name, params = best_configuration(study.best_trial, candidates)
    return Selection(
        detector=name,
        params=params,
        score=float(study.best_value),
        criterion=criterion,
        n_trials=len(states),
        n_complete=states.count(optuna.trial.TrialState.COMPLETE),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        n_failed=states.count(optuna.trial.TrialState.FAIL),
        study_name=study.study_name,
    )


def candidate_names(train: TrainConfig, input: str = "tabular") -> list[str]:
    """`train.detectors`, with the installed semi-supervised detectors added to `all` when a tabular search uses labels."""
    if train.detectors == "all":
        semi_supervised = registry.semi_supervised_candidates() if train.use_labels and input == "tabular" else []
        return registry.default_candidates(input) + semi_supervised
    names = [registry.get(name).name for name in train.detectors]
    unlabelled = [name for name in names if registry.get(name).needs_labels and not train.use_labels]
    if unlabelled:
        raise ValueError(f"train.detectors: {', '.join(unlabelled)} fit with labels; set train.use_labels (and data.label_column)")
    return names


def search_candidates(train: TrainConfig, y: np.ndarray | None, input: str = "tabular") -> dict[str, DetectorSpec]:
    """The search's candidates. Semi-supervised ones only where labelled anomalies can be held out:
    otherwise they would be judged on the very labels they were fitted with."""
    specs = {name: registry.get(name) for name in candidate_names(train, input)}
    return {name: spec for name, spec in specs.items() if not spec.needs_labels or labels_held_out(y)}


class OptunaSearch(Selector):
    """An Optuna study over candidates, judged fold by fold by `make_evaluator`'s criterion.

    The study lives in `train.storage` under `study_name`: trials already there count towards
    `train.n_trials`, so an interrupted study resumes and parallel workers share it.
    """

    def storage(self) -> str:
        return absolute_sqlite(self.train.storage)

    def evaluator(self, X, y, training_scores: dict | None = None):
        # Seeded folds: a study joined or resumed rebuilds the same ones.
        folds = make_folds(X, y, self.train.cv_folds, self.seed)
        return make_evaluator(X, y, folds, self.train.contamination, self.seed, self.train.metric, training_scores)

    def run(self, X, y, candidates, *, n_trials=None, pruning=None, sampler=None, sampler_seed=None, prior=None, user_attrs=None,
            training_scores: dict | None = None):
        """Fill the study with trials; returns it and the evaluator (None when it was full already).
        `training_scores`: see `make_evaluator`."""
        n_trials = n_trials or self.train.n_trials
        pruning = self.train.pruning if pruning is None else pruning
        if self.train.progress_bar:  # the bar replaces Optuna's line per trial; every trial is in MLflow anyway
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        with connection_guard(self.storage(), self.study_name):
            study = open_study(self.storage(), self.study_name, self.seed if sampler_seed is None else sampler_seed, pruning, sampler)
            if len(study.get_trials(deepcopy=False, states=FINISHED)) >= n_trials:
                return study, None
            evaluate = self.evaluator(X, y, training_scores)
            objective = make_objective(evaluate, candidates, prior)
            if user_attrs:
                objective = _with_attrs(objective, user_attrs)
            run_trials(study, objective, n_trials, self.train.timeout, self.callbacks, self.train.progress_bar)
        return study, evaluate


def _with_attrs(objective, attrs: dict):
    def tagged(trial: optuna.Trial) -> float:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return objective(trial)

    return tagged


class ConsensusSearch(OptunaSearch):
    """`train.strategy: consensus` (and any search `meta` does not cover): an Optuna study over
    `train.detectors` and their hyper-parameters, then the rank ensemble of its
    `train.ensemble_size` best distinct trials when it scores higher than the best trial."""

    shares_study = True

    def candidates(self, y) -> dict[str, DetectorSpec]:
        return search_candidates(self.train, y, self.input)

    def join(self, X, y, worker: int) -> None:
        """Run trials of the shared study as parallel worker `worker`; `select` then finds them done."""
        X_fit, y_fit, _ = self.split(X, y)
        # Each worker its own sampler seed, or they would all propose the same candidates.
        self.run(X_fit, y_fit, self.candidates(y_fit), sampler_seed=self.seed + 1 + worker, user_attrs={"worker": worker, "pid": os.getpid()})

    def choose(self, X, y):
        candidates = self.candidates(y)
        study, evaluate = self.run(X, y, candidates)
        with connection_guard(self.storage(), self.study_name):
            criterion = "consensus_spearman" if y is None else self.train.metric
            selection = best_trial_selection(study, candidates, criterion, self.storage())
            # A rank ensemble takes rows, not a graph's nodes with their edges.
            if self.train.ensemble_size > 1 and self.input != "graph":
                selection = with_trial_ensemble(selection, study, candidates, self.train.ensemble_size, evaluate or self.evaluator(X, y))
        spec = ensemble_spec(**selection.params) if selection.detector == ENSEMBLE else candidates[selection.detector]
        return selection, spec
