"""Prefect flows: the pipeline as the Prefect UI, deployments and `pynomaly run` see it."""

import re

import pynomaly_core  # noqa: F401  (sets the telemetry opt-outs before Prefect is imported)


def artifact_key(name: str, what: str) -> str:
    """The Prefect artifact key of a config's `what`: Prefect takes lowercase letters, digits and dashes only, and
    `pynomaly init` names a config after its table (donors_x8.parquet -> donors_x8)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{name}-{what}".lower())
