"""How labels and the label-free default combine: the rule of `train.strategy: default`
(`selection.default.DefaultSelector`).

Without labels the model is IForest alone: three label-free rules that beat it on the development
datasets lost to it on data never seen, and picked by the worst case against IForest in
leave-one-dataset-out, no rule tried is safer than IForest itself (docs/model-selection.md).

With labelled anomalies, IForest and the positive-unlabelled learner (`pu_boost`,
detectors/pu.py) are rank-averaged, each score as its percentile among its training scores. The
learner weighs n / (n + HALF_WEIGHT_LABELS), n the labelled anomalies plus a fifth of the
dismissed rows, IForest the rest. The rule reads the labels' counts only, never how the labelled
rows rank, so one or two labels cannot pick a lucky candidate.
"""

from __future__ import annotations

import numpy as np

from ..detectors.pu import DISMISSED_WEIGHT, KNOWN_NORMAL

LABEL_FREE = "iforest"
LEARNER = "pu_boost"
LEARNER_PARAMS = {"learner": "catboost"}
# Labelled anomalies at which the learner weighs as much as IForest. Fitted on the 22 classical
# development datasets (the k of 0, 0.25, ..., 16 whose blend gains most over the learner alone,
# losses counted twice; docs/model-selection.md, benchmarks/pu_labels.py --blend): 0, so from the
# first labelled anomaly on the learner decides alone; leave-one-dataset-out it picks 0 for 21 of 22.
HALF_WEIGHT_LABELS = 0.0


def label_counts(y) -> tuple[int, int]:
    """Labelled anomalies and dismissed (known normal) rows."""
    if y is None:
        return 0, 0
    y = np.asarray(y)
    return int(np.sum(y == 1)), int(np.sum(y == KNOWN_NORMAL))


def learner_weight(n_anomalies: int, n_dismissed: int = 0) -> float:
    """The learner's share of the blend; 0 without a labelled anomaly. A dismissed row counts as
    1 / DISMISSED_WEIGHT of a labelled anomaly: it says where anomalies are not, which narrows less."""
    if not n_anomalies:
        return 0.0
    n = n_anomalies + n_dismissed / DISMISSED_WEIGHT
    return n / (n + HALF_WEIGHT_LABELS)  # 1 with HALF_WEIGHT_LABELS = 0
