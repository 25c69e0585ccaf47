"""What every selection strategy shares: the `Selection` it returns, the calibration split it
owns, and the final fit. `make_selector(train, ...)` builds the strategy's selector once from the
config; the `train` stage, the parallel workers and `pynomaly bench` call `select(X, y)` alike.
Strategies: `metaselect.MetaSelector` (`meta`) and `consensus.ConsensusSearch` (`consensus`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import ThresholdConfig, TrainConfig
from ..detectors.ensemble import RankEnsemble
from ..detectors.spec import DetectorSpec

ENSEMBLE = "rank_ensemble"
# Few-label meta-selection's candidate that uses the labels: the label-free ensemble averaged with this classifier.
LABEL_MEMBER = "pu_logistic"
LABEL_GUIDED = f"{ENSEMBLE}+{LABEL_MEMBER}"


@dataclass
class Selection:
    detector: str
    params: dict
    score: float
    criterion: str
    n_trials: int = 0
    n_complete: int = 0
    n_pruned: int = 0
    n_failed: int = 0
    study_name: str = ""
    # The ensemble of the best trials, whether chosen or not: members, member_params, score, chosen.
    trial_ensemble: dict | None = None
    # Candidates left out before fitting, with the reason (e.g. their predicted fit time).
    skipped: dict[str, str] = field(default_factory=dict)
    model: Any = None  # the chosen detector, fitted (and calibrated) by `Selector.select`


def ensemble_spec(members: list[str], member_params: list[dict] | None = None, weights: list[float] | None = None) -> DetectorSpec:
    """A rank ensemble as a candidate; its "parameters" are its members, so a selection records them."""
    fixed = {
        "members": tuple(members),
        "member_params": None if member_params is None else tuple(member_params),
        "weights": None if weights is None else tuple(weights),
    }
    params = {key: list(value) for key, value in fixed.items() if value is not None}
    return DetectorSpec(ENSEMBLE, RankEnsemble, ENSEMBLE, lambda trial: dict(params), build_with="members", fixed=fixed)


def label_guided_spec(members: list[str], member_params: list[dict], weights: list[float] | None = None) -> DetectorSpec:
    """The rank ensemble of `members` averaged half and half with a classifier of the labelled anomalies."""
    weights = list(weights or [1] * len(members))
    return ensemble_spec([*members, LABEL_MEMBER], [*member_params, {}], [*weights, sum(weights)])


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


class Selector:
    """Chooses a detector for (X, y) and fits it. Subclasses implement `choose(X, y) -> (Selection, spec)`.

    With `threshold.target_fpr`, a seeded share of the rows is held aside first: the choice and the
    fit never see it, and the threshold is the conformal one of those rows. Without it, the
    threshold is the `train.contamination` quantile of the training scores.
    """

    # What the train stage asks of a strategy before building one (`selection.selector_class`).
    uses_knowledge_base = False  # the choice reads selection_kb.json, so the study's name includes its hash
    shares_study = False  # `train.workers` processes can join one Optuna study

    def __init__(self, train: TrainConfig, threshold: ThresholdConfig = ThresholdConfig(), seed: int = 0, *,
                 study_name: str = "", callbacks=(), input: str = "tabular"):
        self.train, self.threshold, self.seed = train, threshold, seed
        self.study_name, self.callbacks, self.input = study_name, callbacks, input

    def split(self, X, y):
        """The rows the choice and the fit see, and the calibration rows."""
        fit_rows, calibration_rows = calibration_split(y, len(X), self.threshold, self.seed)
        if not len(calibration_rows):
            return X, y, None
        return X[fit_rows], None if y is None else y[fit_rows], X[calibration_rows]

    def select(self, X, y: np.ndarray | None = None) -> Selection:
        X_fit, y_fit, X_calibration = self.split(X, y)
        selection, spec = self.choose(X_fit, y_fit)
        model = spec.build(selection.params, self.train.contamination, self.seed).fit(X_fit, y_fit if spec.needs_labels else None)
        if X_calibration is not None:
            model.calibrate(X_calibration, self.threshold.target_fpr)
        left_out = {f"{name} (ensemble member)": reason for name, reason in getattr(model, "left_out_", {}).items()}
        # A knowledge-base model or a trial is recorded as its detector and parameters.
        return dataclasses.replace(selection, detector=spec.name, model=model, skipped=selection.skipped | left_out)

    def choose(self, X, y) -> tuple[Selection, DetectorSpec]:
        raise NotImplementedError
