"""Pynomaly core: anomaly-detection logic shared by the Prefect flows, DVC stages and CLI."""

import os

__version__ = "0.1.0"

# Telemetry calls hang or fail without a network, and users don't want them.
for _name, _value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # not telemetry: keeps logs readable
}.items():
    os.environ.setdefault(_name, _value)
