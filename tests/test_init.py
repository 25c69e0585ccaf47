"""`pynomaly init`: a config inferred from a table, that `pynomaly run` trains on unchanged."""

import json
import math

import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy
from mlflow import MlflowClient

from pynomaly_core import stages
from pynomaly_core.cli import main
from pynomaly_core.config import load_config
from pynomaly_core.data.schema import MARGIN, guess_id, guess_label, infer_columns, init_config
from pynomaly_core.data.validation import validate
from tests.conftest import ROOT, prefect_harness


def _observed_range_is_widened(frame: pd.DataFrame, columns: dict) -> None:
    """Each range is the observed one widened by MARGIN of its span, up to rounding, and not below 0 for a non-negative column."""
    for name, spec in columns.items():
        low, high = frame[name].min(), frame[name].max()
        span = high - low
        step = 1 if spec.type == "int" else 0.01 * span  # rounding: whole numbers, or a hundredth of the span
        floor = 0 if low >= 0 else -math.inf
        assert spec.min <= low and high <= spec.max and spec.min >= floor, name
        assert spec.min == pytest.approx(max(low - MARGIN * span, floor), abs=step), name
        assert spec.max == pytest.approx(high + MARGIN * span, abs=step), name


def test_init_guesses_id_and_label_and_run_trains_on_the_config(workdir, capsys):
    assert main(["init", "data/raw/wine.csv"]) == 0
    assert "wrote configs/wine.yaml" in capsys.readouterr().out
    text = (workdir / "configs" / "wine.yaml").read_text()
    config = load_config(workdir / "configs" / "wine.yaml")
    frame = pd.read_csv("data/raw/wine.csv")

    assert (config.data.id_column, config.data.label_column) == ("wine_id", "anomaly")
    assert "id_column: wine_id  # guessed: named like an id" in text
    assert "label_column: anomaly  # guessed: a 0/1 column named like a label" in text
    assert f"widened by {MARGIN:.0%} of its span" in text
    assert list(config.data.columns) == [c for c in frame.columns if c not in ("wine_id", "anomaly")]
    assert {name for name, spec in config.data.columns.items() if spec.type == "int"} == {"magnesium", "proline"}
    assert not any(spec.nullable or spec.allowed for spec in config.data.columns.values())
    _observed_range_is_widened(frame, config.data.columns)
    assert config.registry.model_name == "wine-detector" and config.registry.gate_metric == "roc_auc"
    assert config.paths.validated == "data/validated/wine.parquet"
    assert config.train == type(config.train)()  # every other section is the default

    with prefect_harness():
        assert main(["run", "--config", "configs/wine.yaml"]) == 0
    validation = json.loads((workdir / config.paths.validation_report).read_text())
    assert validation["pandera"]["n_valid"] == len(frame)  # the rules accept the table they came from
    assert validation["great_expectations"]["success"]
    metrics = json.loads((workdir / config.paths.metrics).read_text())
    assert 0.6 < metrics["roc_auc"] <= 1
    registration = json.loads((workdir / config.paths.registration).read_text())
    assert registration["model_name"] == "wine-detector" and registration["version"] == "1"
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow/mlflow.db")
    try:
        assert str(MlflowClient().get_model_version_by_alias("wine-detector", "champion").version) == "1"
    finally:
        mlflow.set_tracking_uri(None)


def test_label_not_guessed_from_an_unlikely_name_until_given(workdir, capsys):
    assert main(["init", "data/raw/breast_cancer.csv", "--name", "cells"]) == 0
    text = (workdir / "configs" / "cells.yaml").read_text()
    config = load_config(workdir / "configs" / "cells.yaml")
    assert config.data.label_column is None and config.data.id_column == "sample_id"
    assert "0/1 columns that could be it: malignant" in text
    assert config.registry.gate_metric == "selection_score"  # without a label the gate cannot use roc_auc
    assert "malignant" in config.data.columns

    assert main(["init", "data/raw/breast_cancer.csv", "--name", "cells", "--label", "malignant", "--force"]) == 0
    config = load_config(workdir / "configs" / "cells.yaml")
    demo = load_config(ROOT / "configs" / "demo.yaml")
    assert config.data.label_column == "malignant" and "label_column: malignant  # given with --label" in (workdir / "configs" / "cells.yaml").read_text()
    assert list(config.data.columns) == list(demo.data.columns)  # the 30 rules the demo wrote by hand
    assert all(spec.type == "float" and spec.min >= 0 for spec in config.data.columns.values())
    assert config.registry.gate_metric == "roc_auc"
    assert stages.validate(config).n_valid == 393

    assert main(["init", "data/raw/breast_cancer.csv", "--name", "cells", "--id", "mean_radius", "--force"]) == 0
    config = load_config(workdir / "configs" / "cells.yaml")
    assert config.data.id_column == "mean_radius" and "mean_radius" not in config.data.columns
    assert "sample_id" in config.data.columns  # no longer the id, so a feature


def test_existing_config_is_not_overwritten_without_force(workdir, capsys):
    before = (workdir / "configs" / "demo.yaml").read_text()
    assert main(["init", "data/raw/breast_cancer.csv", "--name", "demo"]) == 2
    err = capsys.readouterr().err
    assert "configs/demo.yaml already exists; pass --force to overwrite it" in err and "Traceback" not in err
    assert (workdir / "configs" / "demo.yaml").read_text() == before
    assert main(["init", "data/raw/breast_cancer.csv", "--name", "demo", "--label", "malignant", "--force"]) == 0
    assert (workdir / "configs" / "demo.yaml").read_text() != before
    assert load_config(workdir / "configs" / "demo.yaml").data.label_column == "malignant"


def test_sql_source_on_postgresql(workdir, scratch_database):
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{scratch_database}"
    engine = sqlalchemy.create_engine(url)
    wine = pd.read_csv("data/raw/wine.csv")
    wine.to_sql("wine", engine, index=False)
    engine.dispose()
    # A NUMERIC column arrives as Python Decimals; a multi-line query must survive the YAML.
    query = "SELECT wine_id, alcohol::numeric(5, 2) AS alcohol, magnesium, hue, anomaly\nFROM wine\nWHERE proline > 400"
    assert main(["init", url, "--query", query, "--name", "wine_sql"]) == 0
    config = load_config(workdir / "configs" / "wine_sql.yaml")
    assert (config.data.source, config.data.query) == (url, query)
    assert {name: spec.type for name, spec in config.data.columns.items()} == {"alcohol": "float", "magnesium": "int", "hue": "float"}
    assert (config.data.id_column, config.data.label_column) == ("wine_id", "anomaly")
    assert stages.validate(config).n_valid == int((wine.proline > 400).sum())


def test_sql_source_on_sqlite(workdir, capsys):
    pd.read_csv("data/raw/wine.csv").to_sql("wine", f"sqlite:///{workdir}/wine.db", index=False)
    url = "sqlite:///wine.db"
    assert main(["init", url, "--query", "SELECT * FROM wine"]) == 2
    assert "--name is needed with --query" in capsys.readouterr().err
    assert main(["init", url, "--query", "SELECT * FROM wine", "--name", "wine_db"]) == 0
    config = load_config(workdir / "configs" / "wine_db.yaml")
    assert stages.validate(config).n_valid == 129 and len(config.data.columns) == 13


def test_parquet_source_gives_the_rules_of_the_same_csv(workdir):
    pd.read_csv("data/raw/wine.csv").to_parquet("data/raw/wine.parquet")
    assert main(["init", "data/raw/wine.parquet", "--name", "wine_parquet"]) == 0
    assert main(["init", "data/raw/wine.csv"]) == 0
    from_parquet, from_csv = (load_config(workdir / "configs" / f"{name}.yaml") for name in ("wine_parquet", "wine"))
    assert from_parquet.data.columns == from_csv.data.columns
    assert (from_parquet.data.id_column, from_parquet.data.label_column) == ("wine_id", "anomaly")
    assert stages.validate(from_parquet).n_valid == 129


def test_inferred_rules_type_each_column_and_reject_what_the_table_never_held():
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({
        "Unnamed: 0": range(n),                                     # a saved index
        "temperature": rng.normal(-5, 3, n),                        # negative values: no floor at 0
        "pressure": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(900, 1100, n)),
        "visits": rng.integers(0, 40, n),
        "flag": rng.integers(0, 2, n),                              # an int 0/1 feature
        "weekend": rng.random(n) < 0.3,
        "colour": rng.choice(["red", "green", None], n),
        "postcode": [f"P{i:04d}" for i in range(n)],                # nearly all distinct: not a category
        "site": "north",                                            # one value
        "seen_at": pd.date_range("2024-01-01", periods=n, freq="h"),
    })
    columns, notes, left_out = infer_columns(frame)
    assert {name: spec.type for name, spec in columns.items()} == {
        "temperature": "float", "pressure": "float", "visits": "int", "flag": "int", "weekend": "bool", "colour": "str"
    }
    assert set(left_out) == {"Unnamed: 0", "postcode", "site", "seen_at"}
    assert "row number" in left_out["Unnamed: 0"] and "identifier or free text" in left_out["postcode"]
    assert {name for name, spec in columns.items() if spec.nullable} == {"pressure", "colour"}
    assert columns["colour"].allowed == ["green", "red"]
    assert (columns["flag"].min, columns["flag"].max) == (0, 1)
    assert columns["temperature"].min < frame["temperature"].min() < 0
    _observed_range_is_widened(frame, {k: columns[k] for k in ("temperature", "pressure", "visits")})
    assert notes["pressure"].endswith(f"{frame['pressure'].isna().sum()} missing")

    data = load_config(ROOT / "configs" / "demo.yaml").data.model_copy(update={"columns": columns, "label_column": None})
    assert len(validate(frame, data).valid) == n  # every row of the table the rules came from passes
    beyond = frame.head(3).assign(temperature=[columns["temperature"].max + 1, 0.0, 0.0], colour=["red", "blue", "red"])
    rejected = validate(beyond, data).rejected
    assert rejected["_row"].tolist() == [1, 2]
    assert "temperature: less_than_or_equal_to" in rejected["_errors"][0] and "colour: isin" in rejected["_errors"][1]


@pytest.mark.parametrize(
    "name, expected",
    [("sampleId", "sampleId"), ("ID", "ID"), ("order_key", "order_key"), ("identity", None)],  # 'identity' is not the word 'id'
)
def test_id_guess_needs_an_id_name_and_unique_values(name, expected):
    frame = pd.DataFrame({"x": [5, 6, 5, 6], name: [3, 1, 2, 7]})
    assert guess_id(frame)[0] == expected
    assert guess_id(frame.assign(**{name: [3, 3, 2, 7]}))[0] is None  # not unique: no id


@pytest.mark.parametrize(
    "name, values, expected",
    [
        ("is_anomaly", [0, 1, 0, 0], "is_anomaly"),
        ("Outlier", [False, True, False, False], "Outlier"),
        ("class", [0.0, 1.0, 0.0, 0.0], "class"),
        ("class", [1, 2, 3, 1], None),       # not 0/1
        ("target", [0, 0, 0, 0], None),      # no anomaly
        ("label", [0, 1, None, 0], None),    # missing labels
        ("malignant", [0, 1, 0, 0], None),   # 0/1, but not named like a label
    ],
)
def test_label_guess_needs_a_label_name_and_both_0_and_1(name, values, expected):
    assert guess_label(pd.DataFrame({name: values, "x": [1.0, 2.0, 3.0, 4.0]}))[0] == expected


@pytest.mark.parametrize(
    "args, message",
    [
        (["data/raw/missing.csv"], "input file not found: data/raw/missing.csv"),
        (["data/raw/empty.csv"], "data/raw/empty.csv is empty"),
        (["data/raw/header.csv"], "data/raw/header.csv has no data rows"),
        (["data/raw/binary.csv"], "data/raw/binary.csv is not UTF-8 text: invalid start byte"),
        (["data/raw/ids.csv"], "no column can be a feature (site: one value only ('north')"),
        (["data/raw/wine.csv", "--label", "quality"], "--label quality: no such column in data/raw/wine.csv"),
        (["data/raw/wine.csv", "--label", "magnesium"], "--label magnesium: expected 0 (normal) and 1 (anomaly)"),
        (["data/raw/wine.csv", "--label", "wine_id", "--id", "wine_id"], "--label and --id both name 'wine_id'"),
        (["data/raw/wine.csv", "--name", "../up"], "--name '../up': use letters, digits"),
        (["sqlite:///wine.db"], "DATA looks like a database URL: pass --query"),
        (["sqlite:///wine.db", "--query", "SELECT * FROM nowhere", "--name", "x"], "no such table: nowhere"),
    ],
)
def test_bad_input_is_a_clear_error(workdir, capsys, args, message):
    (workdir / "data" / "raw" / "empty.csv").write_text("")
    (workdir / "data" / "raw" / "header.csv").write_text("a,b\n")
    (workdir / "data" / "raw" / "binary.csv").write_bytes(b"\xff\xfe\x00\x01" * 50)
    (workdir / "data" / "raw" / "ids.csv").write_text("id,site\n1,north\n2,north\n")
    configs = sorted((workdir / "configs").iterdir())
    assert main(["init", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted((workdir / "configs").iterdir()) == configs  # nothing written


def test_written_file_holds_exactly_the_inferred_config(workdir):
    """Names and values that YAML would misread unquoted (yes, on, ~, null, 1.5, '# ', ': ') come back as they were."""
    frame = pd.DataFrame({
        "yes": [1.5, 2.5, 3.5, 4.5], "a: b": [1, 2, 3, 5], "x # y": ["yes", "no", "on", "~"], "null": [0, 1, 0, 0],
    })
    frame.to_csv("data/raw/awkward.csv", index=False)
    query = "SELECT *\nFROM awkward  -- a comment: with # and 'quotes'"
    path, config, _ = init_config("data/raw/awkward.csv", name="awkward", label="null")
    assert load_config(path) == config
    assert config.data.columns["x # y"].allowed == ["no", "on", "yes", "~"]
    frame.to_sql("awkward", "sqlite:///awkward.db", index=False)
    path, config, _ = init_config("sqlite:///awkward.db", name="awkward_sql", query=query)
    assert load_config(path) == config and config.data.query == query
