"""Labels recorded before the workbench kept each label's batch version and row values (migration
0002): they count while their batch's scored file is unchanged, and are left out, counted, once it
is rewritten."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from alembic import command
from alembic.config import Config

from pynomaly_core.labels import feedback
from pynomaly_core.errors import DataError
from tests.conftest import ROOT, demo_config
from workbench.db import connect, migrate
from workbench.retrain import feedback_config

MIGRATIONS = Path(__file__).resolve().parents[1] / "workbench" / "migrations"


def upgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, revision)


def test_unversioned_labels_count_only_until_their_batch_file_is_rewritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = feedback_config(demo_config())
    (tmp_path / "mlflow").mkdir()
    url = feedback.database_url(config)
    source = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns="malignant")
    scored = source.head(5).assign(score=0.0, is_anomaly=0)
    path = feedback.batch_file(config, "batch")
    path.parent.mkdir(parents=True)
    scored.to_parquet(path)
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(an_hour_ago, an_hour_ago))  # scored before the labels were given

    upgrade(url, "0001")  # a database of the first schema, labelled then
    engine = connect(url)
    ids = scored[config.data.id_column].astype(str).tolist()
    with engine.begin() as connection:
        for row_id, label in zip(ids[:3], ("anomaly", "normal", "unsure")):
            connection.execute(feedback.LABELS.insert().values(model_name=config.registry.model_name, model_version="1", batch="batch",
                                                               row_id=row_id, label=label, user="ann"))
    migrate(url)
    with engine.connect() as connection:
        history = feedback.label_history(connection, config.registry.model_name, "batch")
    assert history["batch_version"].isna().all() and history["row_values"].isna().all()
    assert len(feedback.read_batch(path)[1].labels(history)) == 3  # the queue still shows them

    rows = feedback.labelled_rows(config)
    columns = list(config.data.columns)
    pd.testing.assert_frame_equal(rows[columns], scored.head(2)[columns], check_dtype=False)
    assert rows[feedback.LABEL_COLUMN].tolist() == [1, 0] and rows.attrs[feedback.N_STALE] == 0

    # An analyst changes the first row's label after the upgrade: it replaces the unversioned one.
    version = feedback.read_batch(path)[1]
    with engine.begin() as connection:
        connection.execute(feedback.LABELS.insert().values(
            model_name=config.registry.model_name, model_version="1", batch="batch", row_id=ids[0], label="normal", user="ann",
            batch_version=version.fingerprint, row_values=feedback.row_values(scored.iloc[0], columns)))
        latest = feedback.latest_labels(connection, config.registry.model_name, "batch", version)
    assert latest.set_index("row_id")["label"].to_dict() == {ids[0]: "normal", ids[1]: "normal", ids[2]: "unsure"}
    rows = feedback.labelled_rows(config)
    pd.testing.assert_frame_equal(rows[columns], scored.iloc[[1, 0]][columns].reset_index(drop=True), check_dtype=False)
    assert rows[feedback.LABEL_COLUMN].tolist() == [0, 0]

    # The batch scored again: other rows under the same ids.
    source.iloc[5:10].assign(sample_id=scored["sample_id"].to_numpy(), score=0.0, is_anomaly=0).to_parquet(path)
    assert feedback.read_batch(path)[1].labels(history).empty
    rows = feedback.labelled_rows(config)  # the relabelled row, from its stored values; both unversioned labels are stale
    pd.testing.assert_frame_equal(rows[columns], scored.iloc[[0]][columns].reset_index(drop=True), check_dtype=False)
    assert rows.attrs[feedback.N_STALE] == 2
    with engine.begin() as connection:
        connection.execute(feedback.LABELS.delete().where(feedback.LABELS.c.batch_version.is_not(None)))
    with pytest.raises(DataError, match="2 older labels are of batch files re-scored or removed since"):
        feedback.labelled_rows(config)
    engine.dispose()
