"""A series as the table the series detectors take: one row per timestamp with the last `window`
values, oldest first (`config.window_columns`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import window_columns
from ..errors import DataError


def series_windows(frame: pd.DataFrame, *, timestamp: str, value: str, window: int) -> pd.DataFrame:
    """Sort by time and cut into windows; rows that cannot be read are a DataError naming them."""
    missing = [c for c in (timestamp, value) if c not in frame.columns]
    if missing:
        raise DataError(f"series: missing column(s) {missing}; it has {list(frame.columns)}")
    times = pd.to_datetime(frame[timestamp], errors="coerce")
    values = pd.to_numeric(frame[value], errors="coerce")
    for bad, what in ((times.isna(), f"unreadable '{timestamp}'"), (values.isna(), f"missing or non-numeric '{value}'")):
        if bad.any():
            raise DataError(f"series: {int(bad.sum())} row(s) with {what}, e.g. rows {list(frame.index[bad][:5])}")
    repeated = times[times.duplicated()]
    if len(repeated):
        raise DataError(f"series: duplicate '{timestamp}' value(s) {[str(t) for t in repeated.unique()[:5]]}")
    if not 2 <= window <= len(frame):
        raise DataError(f"series: window {window} must be between 2 and the series length {len(frame)}")
    order = np.argsort(times.to_numpy(), kind="stable")
    ordered = values.to_numpy(dtype=np.float64)[order]
    windows = np.lib.stride_tricks.sliding_window_view(ordered, window)
    out = pd.DataFrame(windows, columns=window_columns(window))
    out.insert(0, timestamp, times.to_numpy()[order][window - 1:])
    return out
