"""Choose the detector and its hyper-parameters with an Optuna study (CASH).

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
import time
from dataclasses import dataclass

import numpy as np
import optuna
import sqlalchemy
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from .config import ThresholdConfig, TrainConfig
from .detectors import registry
from .detectors.ensemble import RankEnsemble
from .detectors.graph import Graph
from .detectors.spec import DetectorSpec
from .tracking import absolute_sqlite

REFERENCE_POOL = ("iforest", "copod", "hbos", "knn", "pca")
ENSEMBLE = "rank_ensemble"
# Few-label meta-selection's candidate that uses the labels: the label-free ensemble averaged with this classifier.
LABEL_MEMBER = "pu_logistic"
LABEL_GUIDED = f"{ENSEMBLE}+{LABEL_MEMBER}"
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
    # The ensemble of the best trials, whether chosen or not: members, member_params, score, chosen.
    trial_ensemble: dict | None = None


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


def make_evaluator(X, y, folds, contamination, seed, metric):
    """`evaluate(spec, params)` yields the selection criterion of one candidate fold by fold.

    Each fold's candidate is fitted on the fold's fit rows (with their labels, and only theirs,
    when it is semi-supervised) and judged on its held-out rows: by agreement with the reference
    consensus without labels, by `metric` with them.
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
    ensemble_size: int = 1,
    prior=None,
) -> Selection | None:
    """Run (or resume, or join) the study; trials already in `storage` under `study_name` count towards `n_trials`.

    Parallel workers join with their own `sampler_seed` (so they do not propose the same
    candidates), `summarize=False` and `user_attrs` naming themselves on their trials.
    With `ensemble_size` above 1 the summary weighs the ensemble of that many best trials too.
    """
    if progress_bar:  # the bar replaces Optuna's line per trial; every trial is in MLflow anyway
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluate = None
    try:
        study = open_study(storage, study_name, seed if sampler_seed is None else sampler_seed, pruning, sampler)
        if len(study.get_trials(deepcopy=False, states=FINISHED)) < n_trials:
            evaluate = make_evaluator(X, y, make_folds(X, y, n_folds, seed), contamination, seed, metric)
            objective = make_objective(evaluate, candidates, prior)
            if user_attrs:
                objective = _with_attrs(objective, user_attrs)
            run_trials(study, objective, n_trials, timeout, callbacks, progress_bar)
        if not summarize:
            return None
        criterion = "consensus_spearman" if y is None else metric if prior is None else f"{metric}, shrunk to the meta prediction"
        selection = best_trial_selection(study, candidates, criterion=criterion, storage=storage)
        if ensemble_size > 1:
            # The same folds as the trials: they are seeded (a study joined or resumed rebuilds them).
            evaluate = evaluate or make_evaluator(X, y, make_folds(X, y, n_folds, seed), contamination, seed, metric)
            selection = with_trial_ensemble(selection, study, candidates, ensemble_size, evaluate)
    except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError, UnboundLocalError) as err:
        # Optuna wraps a failed commit, and when the database is gone while it records a failed
        # trial its own clean-up raises UnboundLocalError: a lost connection is somewhere in the chain.
        lost = _lost_connection(err)
        if lost is None:
            raise
        # A ConnectionError, so the Prefect task retries it; finished trials are kept in the study.
        where = sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
        raise ConnectionError(f"Optuna storage {where} unreachable during study '{study_name}': {lost.orig or lost}") from err
    return selection


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


def ensemble_spec(members: list[str], member_params: list[dict] | None = None, weights: list[float] | None = None) -> DetectorSpec:
    """A rank ensemble as a candidate; its "parameters" are its members, so a selection records them."""
    fixed = {
        "members": tuple(members),
        "member_params": None if member_params is None else tuple(member_params),
        "weights": None if weights is None else tuple(weights),
    }
    params = {key: list(value) for key, value in fixed.items() if value is not None}
    return DetectorSpec(ENSEMBLE, RankEnsemble, ENSEMBLE, lambda trial: dict(params), build_with="members", fixed=fixed)


def label_guided_spec(members: list[str], member_params: list[dict]) -> DetectorSpec:
    """The rank ensemble of `members` averaged half and half with a classifier of the labelled anomalies."""
    return ensemble_spec([*members, LABEL_MEMBER], [*member_params, {}], [1] * len(members) + [len(members)])


def fixed_params(spec: DetectorSpec, params: dict) -> DetectorSpec:
    """The detector with these hyper-parameters only, as a candidate."""
    return dataclasses.replace(spec, search_space=lambda trial: dict(params))


def calibration_split(y: np.ndarray | None, n_rows: int, threshold: ThresholdConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows to select and fit on, and rows held aside to calibrate `threshold.target_fpr` (seeded).

    Known anomalies (y == 1) always stay with the fit rows: a false-positive rate is calibrated
    on normal rows, and the labelled objective and semi-supervised detectors need them.
    """
    every_row = np.arange(n_rows)
    if threshold.target_fpr is None:
        return every_row, every_row[:0]
    unlabelled = every_row if y is None else np.flatnonzero(y != 1)
    count = int(round(threshold.calibration_share * n_rows))
    calibration = np.sort(np.random.default_rng(seed).choice(unlabelled, count, replace=False))
    return np.setdiff1d(every_row, calibration), calibration


def train_detector(
    X: np.ndarray,
    y: np.ndarray | None,
    train: TrainConfig,
    seed: int,
    *,
    study_name: str,
    threshold: ThresholdConfig = ThresholdConfig(),
    callbacks=(),
    exclude_datasets: tuple[str, ...] = (),
    input: str = "tabular",
):
    """Select the detector and fit it: what the `train` stage and `pynomaly bench` share.

    Without `threshold.target_fpr` on all of X, with the `train.contamination` quantile as
    threshold. With it, on the rows `calibration_split` leaves, and the threshold is the conformal
    one of the held-aside rows.
    """
    if threshold.target_fpr is None:
        return _select_and_fit(X, y, train, seed, study_name, callbacks, exclude_datasets, input)
    fit_rows, calibration_rows = calibration_split(y, len(X), threshold, seed)
    y_fit = None if y is None else y[fit_rows]
    detector, selection = _select_and_fit(X[fit_rows], y_fit, train, seed, study_name, callbacks, exclude_datasets, input)
    return detector.calibrate(X[calibration_rows], threshold.target_fpr), selection


def _select_and_fit(X, y, train: TrainConfig, seed: int, study_name: str, callbacks, exclude_datasets, input: str):
    """strategy "meta" (tabular data, `detectors: all`): the meta-learned ranking (`metaselect`) of
    the knowledge base's models. Without labels the model is the rank ensemble of the top
    `ensemble_size`; with labels an Optuna grid tries the top `meta_candidates` models, that ensemble
    and that ensemble averaged half and half with a classifier of the labelled anomalies, each
    candidate's ROC-AUC on the labelled anomalies shrunk to its predicted one. Otherwise
    ("consensus"): an Optuna study over `train.detectors` and their hyper-parameters, and the rank
    ensemble of its `ensemble_size` best trials.
    """
    sampler, prior, options = None, None, search_options(train)
    ensemble_size = 1
    # The knowledge base describes tabular data and the default detectors: named detectors, a
    # series or a graph always go to the search.
    if train.strategy == "meta" and train.detectors == "all" and input == "tabular":
        from . import metaselect

        near = metaselect.neighbours(metaselect.meta_features(X, seed), exclude_datasets)
        ranking = near.ranking()
        catalogue = metaselect.models()
        top = [name for name, _ in ranking[: train.ensemble_size]]
        member_names, member_params = [catalogue[name][0] for name in top], [catalogue[name][1] for name in top]
        ensemble = ensemble_spec(member_names, member_params)
        if y is None:
            detector = ensemble.build({}, train.contamination, seed).fit(X)
            return detector, Selection(
                detector=ensemble.name, params=ensemble.search_space(None), score=near.predicted(top),
                criterion="meta_predicted_aucroc", n_trials=0, n_complete=0, n_pruned=0, n_failed=0, study_name="",
            )
        # Few labels cannot tune hyper-parameters without over-fitting: the knowledge base's models only.
        candidates = {name: fixed_params(registry.get(catalogue[name][0]), catalogue[name][1]) for name, _ in ranking[: train.meta_candidates]}
        models_of = {name: [name] for name in candidates}
        candidates[ensemble.name], models_of[ensemble.name] = ensemble, top
        # The labels join through that ensemble guided by a classifier of the labelled anomalies.
        # Cross-validated, so it needs two labelled anomalies; the knowledge base is label-free,
        # so its prediction is the ensemble's.
        if labels_held_out(y):
            candidates[LABEL_GUIDED], models_of[LABEL_GUIDED] = label_guided_spec(member_names, member_params), top
        if train.metric == "roc_auc":  # the predictions are ROC-AUCs
            n_labelled, calibrated = int(np.sum(y == 1)), metaselect.calibration(exclude_datasets)

            def prior(name: str, measured: float) -> float:
                models = models_of[name]
                return metaselect.shrink_to_prior(measured, near.predicted(models), n_labelled, metaselect.prior_labels(near, models, calibrated))

        sampler = optuna.samplers.GridSampler({"detector": list(candidates)}, seed=seed)
        # Every candidate is fitted once: a pruner would only drop some on their raw score.
        options |= {"n_trials": min(train.n_trials, len(candidates)), "pruning": False}
    else:
        candidates = search_candidates(train, y, input)
        # A rank ensemble takes rows, not a graph's nodes with their edges.
        ensemble_size = train.ensemble_size if input != "graph" else 1
    selection = select_detector(
        X, y, candidates=candidates, seed=seed, study_name=study_name, callbacks=callbacks, sampler=sampler,
        ensemble_size=ensemble_size, prior=prior, **options,
    )
    spec = ensemble_spec(**selection.params) if selection.detector == ENSEMBLE else candidates[selection.detector]
    # A knowledge-base model is recorded as its detector and parameters.
    selection = dataclasses.replace(selection, detector=spec.name)
    detector = spec.build(selection.params, train.contamination, seed).fit(X, y if spec.needs_labels else None)
    return detector, selection
