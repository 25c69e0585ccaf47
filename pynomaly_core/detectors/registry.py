"""Every detector Pynomaly can train, by name: a plain dict of specs."""

from __future__ import annotations

from . import pyod, sklearn
from .spec import DetectorSpec

REGISTRY: dict[str, DetectorSpec] = {spec.name: spec for spec in [*pyod.SPECS, *sklearn.SPECS]}


def get(name: str) -> DetectorSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector '{name}'; known: {', '.join(sorted(REGISTRY))}") from None


def find(**tags) -> list[DetectorSpec]:
    """Specs whose tags equal every given tag, e.g. `find(backend="pyod", input="tabular")`."""
    return [spec for spec in REGISTRY.values() if all(spec.tags.get(k) == v for k, v in tags.items())]
