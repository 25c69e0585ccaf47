"""Vega-Lite specs (written with Altair) of the drift pages; the browser renders them with the vendored Vega.

Histograms are binned here, so a spec carries a few dozen numbers rather than every row, and the
charts need no expressions evaluated in the browser (the page's CSP allows no eval).
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
from scipy import stats

REFERENCE, BATCH = "reference", "batch"
COLORS = alt.Scale(domain=[REFERENCE, BATCH], range=["#7a869a", "#d9480f"])
BINS = 30


def _shares(reference: np.ndarray, batch: np.ndarray) -> pd.DataFrame:
    """Both samples' shares of rows in common bins (shares, not counts: the samples differ in size)."""
    values = np.concatenate([reference, batch])
    edges = np.histogram_bin_edges(values[np.isfinite(values)], bins=BINS)
    frames = []
    for name, sample in ((REFERENCE, reference), (BATCH, batch)):
        counts, _ = np.histogram(sample[np.isfinite(sample)], bins=edges)
        frames.append(pd.DataFrame({"start": edges[:-1], "end": edges[1:], "share": counts / max(len(sample), 1), "set": name}))
    return pd.concat(frames, ignore_index=True)


def distribution(reference: pd.Series, batch: pd.Series, title: str, threshold: float | None = None) -> dict:
    """Reference and batch distributions of one numeric column (or of the scores, with the threshold as a rule)."""
    data = _shares(reference.to_numpy(dtype=float), batch.to_numpy(dtype=float))
    bars = alt.Chart(data).mark_rect(opacity=0.55).encode(
        x=alt.X("start:Q", title=None), x2="end:Q", y=alt.Y("share:Q", title="share of rows", axis=alt.Axis(format="%")), y2=alt.datum(0),
        color=alt.Color("set:N", scale=COLORS, title=None), tooltip=["set", "start", "end", alt.Tooltip("share:Q", format=".1%")])
    chart = bars
    if threshold is not None:
        rule = alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(strokeDash=[4, 3], color="black").encode(x="threshold:Q")
        chart = bars + rule
    return chart.properties(width=320, height=160, title=title).to_dict()


def categories(reference: pd.Series, batch: pd.Series, title: str) -> dict:
    """Reference and batch shares of each category of a text column."""
    shares = pd.concat([reference.astype(str).value_counts(normalize=True).rename(REFERENCE),
                        batch.astype(str).value_counts(normalize=True).rename(BATCH)], axis=1).fillna(0.0)
    data = shares.head(20).rename_axis("value").reset_index().melt("value", var_name="set", value_name="share")
    return alt.Chart(data).mark_bar().encode(
        y=alt.Y("value:N", title=title), x=alt.X("share:Q", axis=alt.Axis(format="%"), title="share of rows"),
        color=alt.Color("set:N", scale=COLORS, title=None), yOffset="set:N",
    ).properties(width=320, title=title).to_dict()


def alert_band(n_alerts: int, n_rows: int, expected: float, alpha: float) -> tuple[float, float]:
    """The alert rates a batch of `n_rows` shows with probability 1 - alpha when its true rate is the reference's."""
    low, high = stats.binom.interval(1 - alpha, n_rows, expected)
    return float(low / n_rows), float(high / n_rows)


def alert_rate(observed: float, expected: float, band: tuple[float, float]) -> dict:
    """The batch's alert rate as a point against the reference's rate and its band."""
    row = pd.DataFrame({"what": ["alert rate"], "observed": [observed], "expected": [expected], "low": [band[0]], "high": [band[1]]})
    base = alt.Chart(row).encode(y=alt.Y("what:N", title=None))
    band_bar = base.mark_bar(color="#dde3ea", height=24).encode(
        x=alt.X("low:Q", title="share of rows flagged", axis=alt.Axis(format="%")), x2="high:Q")
    expected_tick = base.mark_tick(color="#7a869a", thickness=2, size=28).encode(x="expected:Q")
    point = base.mark_point(filled=True, size=120, color="#d9480f").encode(
        x="observed:Q", tooltip=[alt.Tooltip("observed:Q", format=".1%"), alt.Tooltip("expected:Q", format=".1%"),
                                 alt.Tooltip("low:Q", format=".1%"), alt.Tooltip("high:Q", format=".1%")])
    return (band_bar + expected_tick + point).properties(width=320, height=60, title="alert rate against its band").to_dict()


def trend(history: pd.DataFrame) -> dict:
    """Alert rate (with the band of each batch) and share of drifted columns per judged batch over time, one colour per model version."""
    data = history.assign(when=history["when"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
    color = alt.Color("version:N", title="model version")
    tooltip = ["batch", "version", alt.Tooltip("alert_rate:Q", format=".1%"), alt.Tooltip("drift_share:Q", format=".0%"), "verdict"]
    base = alt.Chart(data).encode(x=alt.X("when:T", title="judged at"))
    # The band as a wide translucent rule at each batch: an area would vanish with one batch, and batches differ in size.
    band = base.mark_rule(opacity=0.3, strokeWidth=8).encode(y=alt.Y("band_low:Q", title="alert rate", axis=alt.Axis(format=".0%")),
                                                             y2="band_high:Q", color=color)
    rate = base.mark_line(point=True).encode(y="alert_rate:Q", color=color, tooltip=tooltip)
    share = base.mark_line(point=True).encode(
        y=alt.Y("drift_share:Q", title="share of columns drifted", axis=alt.Axis(format=".0%"), scale=alt.Scale(domain=[0, 1])),
        color=color, tooltip=tooltip)
    return alt.vconcat((band + rate).properties(width=640, height=160, title="alert rate per batch (bar: the rates chance gives at the reference's)"),
                       share.properties(width=640, height=120, title="share of feature columns that drifted")).to_dict()
