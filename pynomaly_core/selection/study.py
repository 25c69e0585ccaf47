"""The Optuna study's storage: create or join it, run trials until it is full, and turn a lost
database connection into a `ConnectionError` naming the storage (the Prefect task retries it)."""

from __future__ import annotations

from contextlib import contextmanager

import optuna
import sqlalchemy

from ..detectors.base import FIT_ERRORS

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
# Failures of one candidate fail that trial, not the study.
TRIAL_ERRORS = FIT_ERRORS


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


def _lost_connection(err: BaseException) -> sqlalchemy.exc.OperationalError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, sqlalchemy.exc.OperationalError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def connection_guard(storage: str, study_name: str):
    """Re-raise a lost database connection as a `ConnectionError`; finished trials stay in the study."""
    try:
        yield
    except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError, UnboundLocalError) as err:
        # Optuna wraps a failed commit, and when the database is gone while it records a failed
        # trial its own clean-up raises UnboundLocalError: a lost connection is somewhere in the chain.
        lost = _lost_connection(err)
        if lost is None:
            raise
        where = sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
        raise ConnectionError(f"Optuna storage {where} unreachable during study '{study_name}': {lost.orig or lost}") from err
