"""Model selection: the shared base (`base`: `Selection`, `Selector`, the calibration split), one
module per strategy (`metaselect`: meta-selection from the knowledge base `selection_kb.json`;
`consensus`: the Optuna consensus search), the Optuna study (`study`) and `pynomaly bench` (`bench`).
`make_selector` lives here, above the strategies, so no strategy imports it back."""

from __future__ import annotations

from ..config import ThresholdConfig, TrainConfig
from .base import Selector
from .consensus import ConsensusSearch
from .metaselect import MetaSelector


def selector_class(train: TrainConfig, input: str = "tabular") -> type[Selector]:
    """The strategy of `train.strategy`. The knowledge base describes tabular data and the default
    detectors: named detectors, a series or a graph always go to the consensus search."""
    if train.strategy == "meta" and train.detectors == "all" and input == "tabular":
        return MetaSelector
    return ConsensusSearch


def make_selector(train: TrainConfig, threshold: ThresholdConfig = ThresholdConfig(), seed: int = 0, *,
                  input: str = "tabular", knowledge_base: dict | None = None, **options) -> Selector:
    """The selector of `train.strategy` (`selector_class`), built once from the config.
    `knowledge_base` replaces the shipped one (`pynomaly bench --lodo` hands one without the dataset under test)."""
    if selector_class(train, input) is MetaSelector:
        return MetaSelector(train, threshold, seed, input=input, knowledge_base=knowledge_base, **options)
    return ConsensusSearch(train, threshold, seed, input=input, **options)
