"""Every detector Pynomaly can train, by name: a plain dict of specs.

Backend modules import their frameworks (torch, tensorflow, jax, torch_geometric) only when a
detector is fitted, so loading the registry stays cheap.
"""

from __future__ import annotations

from . import graph, jax, pu, pyod, sklearn, tensorflow, timeseries, torch
from .spec import DetectorSpec

REGISTRY: dict[str, DetectorSpec] = {spec.name: spec for spec in [*pyod.SPECS, *sklearn.SPECS, *pu.SPECS, *torch.SPECS, *tensorflow.SPECS, *jax.SPECS, *timeseries.SPECS, *graph.SPECS]}


def get(name: str) -> DetectorSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector '{name}'; known: {', '.join(sorted(REGISTRY))}") from None


def find(**tags) -> list[DetectorSpec]:
    """Specs whose tags equal every given tag, e.g. `find(backend="pyod", input="tabular")`."""
    return [spec for spec in REGISTRY.values() if all(spec.tags.get(k) == v for k, v in tags.items())]


def default_candidates(input: str = "tabular") -> list[str]:
    """`train.detectors: all`: the 18 fast tabular detectors (plus the fast series ones for a
    series; three PyGOD detectors for a graph); deep, slow and optional-dependency detectors join
    a search only by name."""
    inputs = {"tabular", "series"} if input == "series" else {input}
    return [name for name, spec in REGISTRY.items() if spec.default and spec.tags["input"] in inputs]


def semi_supervised_candidates() -> list[str]:
    """Tabular detectors fitted with labels, whose packages are installed: they join searches that use labels."""
    return [spec.name for spec in find(needs_labels=True, input="tabular") if not spec.missing_packages]
