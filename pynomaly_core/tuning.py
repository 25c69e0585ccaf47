"""Choose the detector and its hyper-parameters with an Optuna study (CASH).

Label-free criterion (the default): *consensus agreement*. On each of `cv_folds` folds a
fixed, diverse reference pool (IForest, COPOD, HBOS, KNN, PCA with default parameters) is
fitted on the other folds and its scores on the held-out fold are rank-averaged into a
consensus. A candidate is fitted the same way and scored by the Spearman correlation of its
held-out scores with that consensus; the objective is the mean over folds. Ensembles of
diverse detectors are robust on average (ADBench, Han et al. 2022), and agreement with one is
the "model centrality" criterion studied by Ma, Zhao & Akoglu (2023) for unsupervised model
selection. It needs no labels and rewards detectors whose ranking generalises to unseen rows.

With `train.use_labels`, the objective is the cross-validated ROC-AUC (or PR-AUC) of the
held-out folds instead. Either way each fold is reported to Optuna, so a pruner stops
hopeless candidates after the first fold.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import optuna
import sqlalchemy
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from .config import TrainConfig
from .detectors import registry
from .detectors.ensemble import RankEnsemble
from .detectors.graph import Graph
from .detectors.spec import DetectorSpec
from .tracking import absolute_sqlite

REFERENCE_POOL = ("iforest", "copod", "hbos", "knn", "pca")
LABEL_METRICS = {"roc_auc": roc_auc_score, "pr_auc": average_precision_score}
# Failures of one candidate (a degenerate fit, a singular covariance) fail that trial, not the study.
TRIAL_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError)


@dataclass
class Selection:
    detector: str
    params: dict
    score: float
    criterion: str
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    study_name: str


def make_folds(X: np.ndarray, y: np.ndarray | None, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(X, Graph):  # graph detectors are transductive: fitted on every node and score them all
        every_node = np.arange(len(X))
        return [(every_node, every_node)]
    if y is None:
        return list(KFold(n_folds, shuffle=True, random_state=seed).split(X))
    # Every held-out fold needs a labelled anomaly; with a single one, score the rows fitted on
    # (the detectors never see labels, so this ranks without leaking them into the fit).
    n_splits = min(n_folds, int(np.sum(y == 1)))
    if n_splits < 2:
        every_row = np.arange(len(X))
        return [(every_row, every_row)]
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


def make_objective(X, y, folds, candidates, contamination, seed, metric):
    consensus = None if y is not None else consensus_scores(X, folds, contamination, seed)

    def objective(trial: optuna.Trial) -> float:
        name, params = suggest(trial, candidates)
        fold_values = []
        started = time.perf_counter()
        for step, (fit_rows, held_out) in enumerate(folds):
            detector = candidates[name].build(params, contamination, seed).fit(X[fit_rows])
            scores = detector.decision_function(X[held_out])
            if not np.all(np.isfinite(scores)):
                raise ValueError(f"{name} gave non-finite scores")
            if consensus is None:
                fold_values.append(LABEL_METRICS[metric](y[held_out], scores))
            else:
                fold_values.append(spearmanr(scores, consensus[step]).statistic)
            trial.report(float(np.mean(fold_values)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("fit_seconds", round(time.perf_counter() - started, 4))
        return float(np.mean(fold_values))

    return objective


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def open_study(storage: str, study_name: str, seed: int, pruning: bool, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Create the study, or join it: several processes sharing one RDB storage share its trials."""
    return optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        sampler=sampler or optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5) if pruning else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def run_trials(study: optuna.Study, objective, n_trials: int, timeout: float | None, callbacks=(), progress_bar: bool = False) -> int:
    """Run trials until the study holds `n_trials` finished ones, counting those of other processes too."""
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    if remaining <= 0:
        return 0
    before = len(study.get_trials(deepcopy=False))
    study.optimize(
        objective, n_trials=remaining, timeout=timeout, catch=TRIAL_ERRORS,
        callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=FINISHED), *callbacks], show_progress_bar=progress_bar,
    )
    return len(study.get_trials(deepcopy=False)) - before


def _with_attrs(objective, attrs: dict):
    def tagged(trial: optuna.Trial) -> float:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return objective(trial)

    return tagged


def _lost_connection(err: BaseException) -> sqlalchemy.exc.OperationalError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, sqlalchemy.exc.OperationalError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def select_detector(
    X: np.ndarray,
    y: np.ndarray | None,
    *,
    candidates: dict[str, DetectorSpec],
    n_trials: int,
    timeout: float | None,
    n_folds: int,
    contamination: float,
    seed: int,
    metric: str,
    pruning: bool,
    storage: str,
    study_name: str,
    progress_bar: bool = False,
    callbacks=(),
    sampler: optuna.samplers.BaseSampler | None = None,
    sampler_seed: int | None = None,
    summarize: bool = True,
    user_attrs: dict | None = None,
) -> Selection | None:
    """Run (or resume, or join) the study; trials already in `storage` under `study_name` count towards `n_trials`.

    Parallel workers join with their own `sampler_seed` (so they do not propose the same
    candidates), `summarize=False` and `user_attrs` naming themselves on their trials.
    """
    if progress_bar:  # the bar replaces Optuna's line per trial; every trial is in MLflow anyway
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_study(storage, study_name, seed if sampler_seed is None else sampler_seed, pruning, sampler)
        if len(study.get_trials(deepcopy=False, states=FINISHED)) < n_trials:
            folds = make_folds(X, y, n_folds, seed)
            objective = make_objective(X, y, folds, candidates, contamination, seed, metric)
            if user_attrs:
                objective = _with_attrs(objective, user_attrs)
            run_trials(study, objective, n_trials, timeout, callbacks, progress_bar)
    except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError, UnboundLocalError) as err:
        # Optuna wraps a failed commit, and when the database is gone while it records a failed
        # trial its own clean-up raises UnboundLocalError: a lost connection is somewhere in the chain.
        lost = _lost_connection(err)
        if lost is None:
            raise
        # A ConnectionError, so the Prefect task retries it; finished trials are kept in the study.
        where = sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
        raise ConnectionError(f"Optuna storage {where} unreachable during study '{study_name}': {lost.orig or lost}") from err
    if not summarize:
        return None
    states = [t.state for t in study.get_trials(deepcopy=False)]
    if optuna.trial.TrialState.COMPLETE not in states:
        raise RuntimeError(f"study '{study_name}': no trial completed ({len(states)} tried); see the failed trials in {storage}")
    name, params = best_configuration(study.best_trial, candidates)
    return Selection(
        detector=name,
        params=params,
        score=float(study.best_value),
        criterion=metric if y is not None else "consensus_spearman",
        n_trials=len(states),
        n_complete=states.count(optuna.trial.TrialState.COMPLETE),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        n_failed=states.count(optuna.trial.TrialState.FAIL),
        study_name=study_name,
    )


def candidate_names(train: TrainConfig, input: str = "tabular") -> list[str]:
    if train.detectors == "all":
        return registry.default_candidates(input)
    return [registry.get(name).name for name in train.detectors]


def search_options(train: TrainConfig) -> dict:
    """`select_detector`'s settings from the config: the same for the train stage and parallel workers."""
    return dict(
        n_trials=train.n_trials,
        timeout=train.timeout,
        n_folds=train.cv_folds,
        contamination=train.contamination,
        metric=train.metric,
        pruning=train.pruning,
        storage=absolute_sqlite(train.storage),
        progress_bar=train.progress_bar,
    )


def ensemble_spec(members: list[str]) -> DetectorSpec:
    return DetectorSpec("rank_ensemble", RankEnsemble, "rank_ensemble", lambda trial: {}, build_with="members", fixed={"members": tuple(members)})


def default_params(spec: DetectorSpec) -> DetectorSpec:
    return dataclasses.replace(spec, search_space=lambda trial: {})


def train_detector(
    X: np.ndarray,
    y: np.ndarray | None,
    train: TrainConfig,
    seed: int,
    *,
    study_name: str,
    callbacks=(),
    exclude_datasets: tuple[str, ...] = (),
    input: str = "tabular",
):
    """Select the detector and fit it on all of X: what the `train` stage and `pynomaly bench` share.

    strategy "meta" (tabular data, `detectors: all`): the meta-learned ranking (`metaselect`) proposes detectors. Without labels the
    model is the rank ensemble of the top `ensemble_size`; with labels an Optuna study tries each of
    the top `meta_candidates` and that ensemble on the labelled anomalies.
    Otherwise ("consensus"): an Optuna study over `train.detectors` and their hyper-parameters.
    """
    sampler = None
    # The knowledge base describes tabular data and the default detectors: named detectors, a
    # series or a graph always go to the search.
    if train.strategy == "meta" and train.detectors == "all" and input == "tabular":
        from . import metaselect

        ranking = metaselect.rank_detectors(metaselect.meta_features(X, seed), exclude_datasets)
        ranked = [name for name, _ in ranking]
        ensemble = ensemble_spec(ranked[: train.ensemble_size])
        if y is None:
            detector = ensemble.build({}, train.contamination, seed).fit(X)
            predicted = dict(ranking)
            members = ranked[: train.ensemble_size]
            return detector, Selection(
                detector=ensemble.name, params={"members": members},
                score=float(np.mean([predicted[m] for m in members])), criterion="meta_predicted_aucroc",
                n_trials=0, n_complete=0, n_pruned=0, n_failed=0, study_name="",
            )
        # Few labels cannot tune hyper-parameters without over-fitting: default parameters only.
        candidates = {name: default_params(registry.get(name)) for name in ranked[: train.meta_candidates]}
        candidates[ensemble.name] = ensemble
        sampler = optuna.samplers.GridSampler({"detector": list(candidates)}, seed=seed)
    else:
        candidates = {name: registry.get(name) for name in candidate_names(train, input)}
    options = search_options(train) | ({"n_trials": min(train.n_trials, len(candidates))} if sampler else {})
    selection = select_detector(
        X, y, candidates=candidates, seed=seed, study_name=study_name, callbacks=callbacks, sampler=sampler, **options
    )
    detector = candidates[selection.detector].build(selection.params, train.contamination, seed).fit(X)
    return detector, selection
