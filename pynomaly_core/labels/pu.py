"""`train.strategy: default`: IForest without labels; with labels, IForest blended with the
positive-unlabelled learner (`pu_boost`) by a rule of how many labels there are.

Why IForest alone without labels: three label-free rules that beat it on the development
datasets lost to it on data never seen (docs/model-selection.md); picked by the worst case
against IForest in leave-one-dataset-out, no rule tried is safer than IForest itself.

The blend is a rank average (each model's score as its percentile among its training scores):
the learner weighs n / (n + HALF_WEIGHT_LABELS), n the labelled anomalies plus a fifth of the
dismissed rows, IForest the rest. The rule depends on the labels' counts only, never on how the
labelled rows rank, so one or two labels cannot pick a lucky candidate.
"""

from __future__ import annotations

import numpy as np

from ..detectors import registry
from ..detectors.pu import DISMISSED_WEIGHT, KNOWN_NORMAL
from ..selection import Selection, Selector, ensemble_spec

LABEL_FREE = "iforest"
LEARNER = "pu_boost"
LEARNER_PARAMS = {"learner": "catboost"}
# Labelled anomalies at which the learner weighs as much as IForest; fitted leave-one-dataset-out
# on the 44 development datasets (docs/model-selection.md, benchmarks/pu_labels.py).
HALF_WEIGHT_LABELS = 1.0
CRITERION = "labels_rule_weight"


def learner_weight(n_anomalies: int, n_dismissed: int = 0) -> float:
    """The learner's share of the blend. A dismissed row counts as 1 / DISMISSED_WEIGHT of a
    labelled anomaly: it says where the anomalies are not, which narrows less."""
    n = n_anomalies + n_dismissed / DISMISSED_WEIGHT
    return n / (n + HALF_WEIGHT_LABELS) if n_anomalies else 0.0


def label_counts(y) -> tuple[int, int]:
    """Labelled anomalies and dismissed (known normal) rows."""
    if y is None:
        return 0, 0
    y = np.asarray(y)
    return int(np.sum(y == 1)), int(np.sum(y == KNOWN_NORMAL))


def blend_spec(weight: float):
    return ensemble_spec([LABEL_FREE, LEARNER], [{}, LEARNER_PARAMS], [1 - weight, weight])


class DefaultSelector(Selector):
    """Chooses nothing by score: the model follows from the label counts. The selection's score is
    the learner's weight (0 without labels)."""

    known_normals = True

    def choose(self, X, y):
        n_anomalies, n_dismissed = label_counts(y)
        weight = learner_weight(n_anomalies, n_dismissed)
        if weight == 0:
            return Selection(LABEL_FREE, {}, 0.0, CRITERION), registry.get(LABEL_FREE)
        spec = blend_spec(weight)
        return Selection(spec.name, spec.search_space(None), weight, CRITERION), spec
