"""The Python packages detectors need, by import name: the one table from import name to the
distributions that provide it and the pynomaly extra that installs them.

Detector tags list import names, the names `importlib.util.find_spec` finds. The registry's
availability check, the install hint of a missing package and the registered model's pip
requirements all read this table.
"""

from __future__ import annotations

import importlib.util

# Packages whose distribution differs from the import name, or that an extra installs; any
# other package is its own distribution, installed by name.
PACKAGES: dict[str, dict] = {
    "sklearn": {"distributions": ("scikit-learn",)},
    "torch": {"extra": "torch"},
    "tensorflow": {"extra": "tensorflow"},
    "jax": {"distributions": ("jax", "jaxlib"), "extra": "jax"},
    "torch_geometric": {"distributions": ("torch-geometric",), "extra": "graph"},
    "pygod": {"extra": "graph"},
    "xgboost": {"distributions": ("xgboost-cpu",), "extra": "xgbod"},
    "catboost": {"extra": "labels"},  # the positive-unlabelled learner (detectors/pu.py)  # the CPU build; see pyproject.toml
}


def distributions(package: str) -> tuple[str, ...]:
    return PACKAGES.get(package, {}).get("distributions", (package,))


def install_hint(package: str) -> str:
    extra = PACKAGES.get(package, {}).get("extra")
    return f"pip install 'pynomaly[{extra}]'" if extra else f"pip install {' '.join(distributions(package))}"


def missing(packages) -> list[str]:
    """Those of `packages` (import names) that are not installed."""
    return [package for package in packages if importlib.util.find_spec(package) is None]


def missing_dependency(detector: str, err: ModuleNotFoundError) -> ImportError:
    package = (err.name or "").split(".")[0]
    return ImportError(f"detector '{detector}' needs the Python package '{package}', which is not installed: {install_hint(package)}")
