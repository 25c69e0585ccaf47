"""Prefect flows: the pipeline as the Prefect UI, deployments and `pynomaly run` see it."""

import pynomaly_core  # noqa: F401  (sets the telemetry opt-outs before Prefect is imported)
