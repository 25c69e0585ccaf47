"""The saved model's size, checked when it is registered: a model that grows with its training
rows loads slowly and fills every server that holds it. Above `registry.max_model_mb` the run
records a warning that names the part (the preprocessor, the detector, or an ensemble member)
that makes it large."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import joblib

MB = 2**20


@dataclass(frozen=True)
class ModelSize:
    mb: float
    limit_mb: float
    parts_mb: dict[str, float]  # measured only when the model is over the limit
    warning: str | None = None


def _pickled_mb(obj) -> float:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.tell() / MB


def parts(pipeline) -> dict:
    """The pipeline's parts by name: its steps, and an ensemble's members in place of the ensemble."""
    named = {}
    for step, obj in pipeline.steps:
        members = getattr(obj, "detectors_", None)
        if members is None:
            named[step] = obj
        else:
            named |= {f"{step} member {i} ({getattr(member, 'model', type(member).__name__)})": member for i, member in enumerate(members)}
    return named


def check(pipeline_path: str | Path, limit_mb: float) -> ModelSize:
    """The size of the saved pipeline file; above `limit_mb`, each part's pickled size and a warning naming the largest."""
    mb = Path(pipeline_path).stat().st_size / MB
    if mb <= limit_mb:
        return ModelSize(round(mb, 3), limit_mb, {})
    sizes = {name: round(_pickled_mb(obj), 3) for name, obj in parts(joblib.load(pipeline_path)).items()}
    largest = max(sizes, key=sizes.get)
    warning = (f"the model is {mb:.1f} MB, over registry.max_model_mb ({limit_mb:g} MB); the largest part is "
               f"{largest} ({sizes[largest]:.1f} MB): it loads slowly and every server holds it in memory")
    return ModelSize(round(mb, 3), limit_mb, sizes, warning)
