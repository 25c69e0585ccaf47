"""A registry entry: how to build a detector, its Optuna search space and its test parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import packages
from .base import BaseDetector


def model_name(detector: str, params: dict) -> str:
    """A detector with fixed hyper-parameters by name: `knn(n_neighbors=20)`, or `knn` for the defaults."""
    return detector if not params else f"{detector}({', '.join(f'{k}={v}' for k, v in params.items())})"


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    estimator: type[BaseDetector]
    model: str
    search_space: Callable[[Any], dict]  # optuna.Trial -> hyper-parameters
    test_params: dict = field(default_factory=dict)
    # In the default candidate set of `train.detectors: all`. Slow, deep and optional-dependency
    # detectors are not: a search runs them only when they are named.
    default: bool = False
    # Packages this model needs beyond its backend's (e.g. PyOD's FeatureBagging needs `combo`).
    dependencies: tuple[str, ...] = ()
    build_with: str = "model"  # "members" for ensembles, which take their members instead of a model name
    fixed: dict = field(default_factory=dict)

    def build(self, params: dict | None = None, contamination: float = 0.1, random_state: int | None = None) -> BaseDetector:
        if self.build_with == "members":
            return self.estimator(**self.fixed, contamination=contamination, random_state=random_state)
        return self.estimator(model=self.model, params=params or {}, contamination=contamination, random_state=random_state)

    @property
    def needs_labels(self) -> bool:
        """Semi-supervised: `fit` needs the known labels. An ensemble does when one of its members does."""
        if self.build_with == "members":
            return self.estimator.members_need_labels(self.fixed["members"])
        return getattr(self.estimator, "needs_labels", False)  # the graph detectors keep their own base class

    @property
    def tags(self) -> dict:
        cls = self.estimator
        return {
            "backend": cls.backend,
            "input": cls.input,
            "gpu": cls.gpu,
            "proba": cls.proba,
            "needs_labels": self.needs_labels,
            "python_dependencies": list(dict.fromkeys([*cls.python_dependencies, *self.dependencies])),
        }

    @property
    def missing_packages(self) -> list[str]:
        """Its Python packages that are not installed; none when the detector is available."""
        return packages.missing(self.tags["python_dependencies"])
