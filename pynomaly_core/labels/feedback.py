"""Analysts' labels of scored rows, and the rows they label for training (`train.labels: feedback`).

The workbench writes the labels; the training stage reads them here. Labels are only ever
appended, one row per decision, so two analysts labelling at once never overwrite each other:
a row's label is its latest decision, and the history stays.

A batch's scored file is overwritten whenever a batch of the same name is scored again (the
deployed flows score data/incoming/batch.csv every hour), and a row id ("#17", or an id column's
value) then names a different row. So each label carries the version of the file it was given on
(`batch_version`) and the labelled row's feature values (`row_values`): the review queue shows
only the current version's labels, and training reads the values the analyst saw.

Labels recorded before these columns existed (migration 0002) have neither. They count as given on
the file as it is while the file has not been written since the label was recorded (its mtime is
older than the label), which covers every label given before the upgrade on a batch not re-scored
since; once the file is rewritten they are hidden in the queue and left out of training, counted
in the training run's `feedback.n_stale` param.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import sqlalchemy as sa

from ..config import PipelineConfig
from ..detectors.pu import KNOWN_NORMAL
from ..errors import DataError
from ..tracking.store import absolute_sqlite
from ..data.validation import build_schema

ANOMALY, NORMAL, UNSURE = "anomaly", "normal", "unsure"  # confirm, dismiss, unsure
LABEL_COLUMN = "_feedback_label"  # 1 = confirmed anomaly, KNOWN_NORMAL (-1) = dismissed, 0 = never labelled
BATCH_COLUMN = "_feedback_batch"
POSITION_PREFIX = "#"  # a row id of a batch without an id column: its position, e.g. "#17"
N_STALE = "n_stale_labels"  # attrs key of labelled_rows' frame: unversioned labels left out
N_HELD_OUT = "n_held_out_labels"  # attrs key of the training rows: labelled rows that are test rows, left to evaluation

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
    sa.Column("batch_version", sa.String(64), nullable=True),  # BatchVersion.fingerprint; null before migration 0002
    sa.Column("row_values", sa.Text, nullable=True),  # the row's feature values as JSON; null before migration 0002
    sa.Index("ix_labels_batch_row", "model_name", "batch", "row_id"),
)


@dataclass(frozen=True)
class BatchVersion:
    """Which content of a batch's scored file a queue shows and a label was given on."""

    fingerprint: str
    written_at: pd.Timestamp  # the file's mtime (UTC) when it was read

    def labels(self, labels: pd.DataFrame) -> pd.DataFrame:
        """The label rows given on this version: recorded with its fingerprint, or unversioned and
        recorded after the file was last written (see the module's docstring)."""
        created = pd.to_datetime(labels["created_at"], utc=True)  # SQLite keeps naive UTC, PostgreSQL gives it with an offset
        return labels[(labels["batch_version"] == self.fingerprint) | (labels["batch_version"].isna() & (created > self.written_at))]


def read_batch(path: Path) -> tuple[pd.DataFrame, BatchVersion]:
    """A scored batch's rows and their version.

    The fingerprint hashes the rows as read (pandas' per-row hashes, then SHA-256), not the file's
    mtime and size: a re-scored batch of as many rows can keep the size and, within the clock's
    resolution, the mtime, while the same rows scored again keep their labels. Hashing the frame
    rather than the bytes covers a Parquet folder too and cannot pair one file version's rows with
    another's hash. For 100k rows of 30 float columns (31 MB of Parquet) it costs ~40 ms beside the
    read's ~240 ms, once per read of the file.
    """
    frame = pd.read_parquet(path)
    written_at = pd.Timestamp(path.stat().st_mtime_ns, unit="ns", tz="UTC")  # after the read: never older than the rows read
    digest = hashlib.sha256(json.dumps(list(map(str, frame.columns))).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return frame, BatchVersion(digest.hexdigest(), written_at)


def row_values(row: pd.Series, columns) -> str:
    """A labelled row's feature values, as stored with its label (JSON; missing values as null)."""
    return json.dumps({c: None if pd.isna(row[c]) else row[c] for c in columns}, default=lambda v: v.item())  # numpy scalars


def database_url(cfg: PipelineConfig) -> str:
    return absolute_sqlite(os.environ.get("PYNOMALY_DB_URL") or cfg.feedback.url)


def label_history(connection, model_name: str, batch: str | None = None, row_id: str | None = None) -> pd.DataFrame:
    """Every decision on this model's batches (or one batch, or one row of it), oldest first."""
    query = sa.select(LABELS).where(LABELS.c.model_name == model_name)
    if batch is not None:
        query = query.where(LABELS.c.batch == batch)
    if row_id is not None:
        query = query.where(LABELS.c.row_id == row_id)
    return pd.DataFrame(connection.execute(query.order_by(LABELS.c.id)).mappings().all(), columns=[c.name for c in LABELS.columns])


def latest_labels(connection, model_name: str, batch: str, version: BatchVersion) -> pd.DataFrame:
    """Each row's latest decision (row_id, label, note, user, created_at, ...) given on this version of the batch's file."""
    return version.labels(label_history(connection, model_name, batch)).drop_duplicates("row_id", keep="last")


def batch_file(cfg: PipelineConfig, batch: str) -> Path:
    """The scored rows of a batch: `<monitoring.scored_dir>/<batch>.parquet`."""
    return Path(cfg.monitoring.scored_dir) / f"{batch}.parquet"


def row_ids(frame: pd.DataFrame, id_column: str | None) -> pd.Series:
    """How labels name a batch's rows: the id column's values as text, else "#position"."""
    if id_column and id_column in frame:
        return frame[id_column].astype(str)
    return pd.Series([f"{POSITION_PREFIX}{i}" for i in range(len(frame))], index=frame.index)


def labelled_rows(cfg: PipelineConfig) -> pd.DataFrame:
    """The confirmed and dismissed rows of this model's scored batches, with their features as the
    analyst saw them (checked against data.columns), LABEL_COLUMN (1 confirmed, KNOWN_NORMAL dismissed) and
    BATCH_COLUMN. Unsure rows are left out, and so are unversioned labels whose batch file was
    rewritten or removed since; attrs[N_STALE] counts those."""
    engine = sa.create_engine(database_url(cfg))
    try:
        with engine.connect() as connection:
            labels = label_history(connection, cfg.registry.model_name)
    except sa.exc.OperationalError as err:
        raise DataError(f"train.labels is feedback but the workbench database {cfg.feedback.url} cannot be read: {err.orig}") from None
    finally:
        engine.dispose()
    for batch, unversioned in labels[labels["row_values"].isna()].groupby("batch"):
        path = batch_file(cfg, batch)
        if path.exists():  # those given on the file as it is now take its version and their rows' values
            frame, version = read_batch(path)
            current = version.labels(unversioned)
            positions = pd.Series(range(len(frame)), index=row_ids(frame, cfg.data.id_column).to_numpy())
            positions = positions[~positions.index.duplicated()]  # a repeated id names its first row, as in the queue
            current = current[current["row_id"].isin(positions.index)]
            columns = [c for c in cfg.data.columns if c in frame]
            labels.loc[current.index, "batch_version"] = version.fingerprint
            labels.loc[current.index, "row_values"] = [row_values(frame.iloc[positions[r]], columns) for r in current["row_id"]]
    decided = labels.drop_duplicates(["batch", "batch_version", "row_id"], keep="last")
    decided = decided[decided["label"].isin([ANOMALY, NORMAL])]
    n_stale = int(decided["row_values"].isna().sum())
    decided = decided[decided["row_values"].notna()]
    if decided.empty:
        raise DataError(f"train.labels is feedback but no row of {cfg.registry.model_name}'s batches is confirmed or dismissed yet"
                        + (f" ({n_stale} older labels are of batch files re-scored or removed since)" if n_stale else ""))
    values = pd.DataFrame([json.loads(v) for v in decided["row_values"]])
    missing = [c for c in cfg.data.columns if c not in values]
    if missing:
        raise DataError(f"train.labels is feedback but labelled rows lack column(s) {', '.join(missing)} of data.columns")
    try:
        rows = build_schema(cfg.data, with_label=False).validate(values[list(cfg.data.columns)], lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases[["column", "check", "failure_case"]].head(5).to_dict("records")
        raise DataError(f"train.labels is feedback but labelled rows no longer fit data.columns: {cases}") from None
    label = np.where(decided["label"] == ANOMALY, 1, KNOWN_NORMAL)
    rows = rows.assign(**{LABEL_COLUMN: label, BATCH_COLUMN: decided["batch"].to_numpy()})
    rows.attrs[N_STALE] = n_stale
    return rows
