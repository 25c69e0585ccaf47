"""`train.strategy: default`: IForest without labels; with labels, IForest rank-averaged with the
positive-unlabelled learner by the rule of `labels.pu` (the counts of the labels decide the weights)."""

from __future__ import annotations

from ..detectors import registry
from ..labels import pu
from .base import Selection, Selector, ensemble_spec, fixed_params

CRITERION = "labels_rule_weight"


def blend_spec(weight: float):
    return ensemble_spec([pu.LABEL_FREE, pu.LEARNER], [{}, pu.LEARNER_PARAMS], [1 - weight, weight])


class DefaultSelector(Selector):
    """Chooses nothing by score: the model follows from the label counts. The selection's score is
    the learner's weight (0 without labels), so a gate on `selection_score` promotes a version
    trained with more labels."""

    known_normals = True  # dismissed rows reach the learner as KNOWN_NORMAL

    def choose(self, X, y):
        weight = pu.learner_weight(*pu.label_counts(y))
        if weight == 0:
            return Selection(pu.LABEL_FREE, {}, 0.0, CRITERION), registry.get(pu.LABEL_FREE)
        if weight == 1:  # IForest would weigh nothing: not fitted
            return Selection(pu.LEARNER, dict(pu.LEARNER_PARAMS), 1.0, CRITERION), fixed_params(registry.get(pu.LEARNER), pu.LEARNER_PARAMS)
        spec = blend_spec(weight)
        return Selection(spec.name, spec.search_space(None), weight, CRITERION), spec
