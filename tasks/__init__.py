"""Prefect tasks: thin wrappers of `pynomaly_core.stages` adding retries, names and logging."""

import pynomaly_core  # noqa: F401  (sets the telemetry opt-outs before Prefect is imported)
