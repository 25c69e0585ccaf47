"""Analysts' labels of scored rows, and the rows they label for training (`train.labels: feedback`).

The workbench writes the labels; the training stage reads them here. Labels are only ever
appended, one row per decision, so two analysts labelling at once never overwrite each other:
a row's label is its latest decision, and the history stays.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from .config import PipelineConfig
from .io import DataError
from .tracking import absolute_sqlite

ANOMALY, NORMAL, UNSURE = "anomaly", "normal", "unsure"  # confirm, dismiss, unsure
LABEL_COLUMN = "_feedback_label"  # 1 = confirmed anomaly, 0 = dismissed or never labelled
BATCH_COLUMN = "_feedback_batch"
POSITION_PREFIX = "#"  # a row id of a batch without an id column: its position, e.g. "#17"

METADATA = sa.MetaData()
LABELS = sa.Table(
    "labels",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(40), nullable=False),
    sa.Column("batch", sa.String(500), nullable=False),
    sa.Column("row_id", sa.String(200), nullable=False),
    sa.Column("label", sa.String(10), nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("user", sa.String(100), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_labels_batch_row", "model_name", "batch", "row_id"),
)


def database_url(cfg: PipelineConfig) -> str:
    return absolute_sqlite(os.environ.get("PYNOMALY_DB_URL") or cfg.feedback.url)


def latest_labels(connection, model_name: str, batch: str | None = None) -> pd.DataFrame:
    """Each labelled row's latest decision (row_id, batch, label, note, user, created_at, model_version)."""
    query = sa.select(LABELS).where(LABELS.c.model_name == model_name)
    if batch is not None:
        query = query.where(LABELS.c.batch == batch)
    frame = pd.DataFrame(connection.execute(query.order_by(LABELS.c.id)).mappings().all(), columns=[c.name for c in LABELS.columns])
    return frame.drop_duplicates(["batch", "row_id"], keep="last")


def batch_file(cfg: PipelineConfig, batch: str) -> Path:
    """The scored rows of a batch: `<monitoring.scored_dir>/<batch>.parquet`."""
    return Path(cfg.monitoring.scored_dir) / f"{batch}.parquet"


def row_ids(frame: pd.DataFrame, id_column: str | None) -> pd.Series:
    """How labels name a batch's rows: the id column's values as text, else "#position"."""
    if id_column and id_column in frame:
        return frame[id_column].astype(str)
    return pd.Series([f"{POSITION_PREFIX}{i}" for i in range(len(frame))], index=frame.index)


def labelled_rows(cfg: PipelineConfig) -> pd.DataFrame:
    """The confirmed and dismissed rows of this model's scored batches, with their features,
    LABEL_COLUMN (1 confirmed, 0 dismissed) and BATCH_COLUMN. Unsure rows are left out."""
    engine = sa.create_engine(database_url(cfg))
    try:
        with engine.connect() as connection:
            labels = latest_labels(connection, cfg.registry.model_name)
    except sa.exc.OperationalError as err:
        raise DataError(f"train.labels is feedback but the workbench database {cfg.feedback.url} cannot be read: {err.orig}") from None
    finally:
        engine.dispose()
    labels = labels[labels["label"].isin([ANOMALY, NORMAL])]
    parts = []
    for batch, decided in labels.groupby("batch"):
        path = batch_file(cfg, batch)
        if not path.exists():
            raise DataError(f"train.labels is feedback: batch {batch} was labelled but its scored rows {path} are gone")
        frame = pd.read_parquet(path)
        ids = row_ids(frame, cfg.data.id_column)
        label_of = dict(zip(decided["row_id"], decided["label"]))
        chosen = ids.isin(label_of.keys())
        rows = frame.loc[chosen, list(cfg.data.columns)]
        parts.append(rows.assign(**{LABEL_COLUMN: (ids[chosen].map(label_of) == ANOMALY).astype(int), BATCH_COLUMN: batch}))
    if not parts:
        raise DataError(f"train.labels is feedback but no row of {cfg.registry.model_name}'s batches is confirmed or dismissed yet")
    return pd.concat(parts, ignore_index=True)
