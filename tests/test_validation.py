"""Bad input gets a specific error, and rejected rows are kept with their reasons."""

import json

import numpy as np
import pandas as pd
import pytest
import sqlalchemy

from pynomaly_core import stages
from pynomaly_core.errors import DataError
from pynomaly_core.data.io import read_table
from pynomaly_core.data.validation import validate
from tests.conftest import demo_config


def _config_on(source: str, **data):
    config = demo_config()
    return config.model_copy(update={"data": config.data.model_copy(update={"source": source, **data})})


def test_valid_demo_data_passes_both_validators(workdir):
    config = demo_config()
    result = stages.validate(config)
    assert (result.n_rows, result.n_valid, result.n_rejected) == (393, 393, 0)
    assert result.expectations_success
    assert pd.read_parquet(config.paths.validated).shape[0] == 393
    report = json.loads(open(config.paths.validation_report).read())
    assert report["great_expectations"]["statistics"]["unsuccessful_expectations"] == 0


def test_bad_rows_are_quarantined_with_row_column_and_reason(workdir, demo_frame):
    frame = demo_frame.astype({"mean_radius": object})
    frame.loc[3, "mean_radius"] = "abc"  # wrong type
    frame.loc[5, "mean_texture"] = -1.0  # below the configured minimum
    frame.loc[8, "malignant"] = 2  # not a 0/1 label
    frame.loc[9, "mean_area"] = None  # missing where not nullable
    frame.to_csv("data/raw/bad.csv", index=False)
    config = _config_on("data/raw/bad.csv")

    result = stages.validate(config)

    assert (result.n_valid, result.n_rejected) == (389, 4)
    rejected = pd.read_csv(config.paths.quarantine)
    assert rejected["_row"].tolist() == [4, 6, 9, 10]
    assert rejected["sample_id"].tolist() == demo_frame.loc[[3, 5, 8, 9], "sample_id"].tolist()
    reasons = dict(zip(rejected["_row"], rejected["_errors"]))
    assert reasons[4].startswith("mean_radius: coerce_dtype('float64') (got 'abc')")
    assert reasons[6] == "mean_texture: greater_than_or_equal_to(0.0) (got -1.0)"
    assert reasons[9] == "malignant: isin([0, 1]) (got 2)"
    assert reasons[10].startswith("mean_area: not_nullable")
    # Great Expectations saw the same batch and reports the failures too.
    report = json.loads(open(config.paths.validation_report).read())
    assert report["great_expectations"]["success"] is False
    assert report["pandera"]["n_rejected"] == 4


def test_validating_block_by_block_gives_validates_rows_and_reasons(demo_frame):
    # The validate stage validates a large table a block of rows at a time (memory): the same rows valid, the same
    # rejected rows with their row numbers counted from the start of the table and the same reasons.
    from pynomaly_core.data.validation import validate_blocks

    config = demo_config()
    frame = demo_frame.astype({"mean_radius": object})
    frame.loc[3, "mean_radius"] = "abc"
    frame.loc[[5, 12], "mean_texture"] = -1.0
    frame.loc[8, "malignant"] = 2
    frame.loc[0:6, "mean_area"] = None  # a whole block missing a required value: its rows are rejected, no DataError
    whole = validate(frame, config.data, source="t")
    blocks = list(validate_blocks(frame, config.data, source="t", block_rows=7))
    assert len(blocks) == -(-len(frame) // 7)
    valid = pd.concat([block.valid for block in blocks], ignore_index=True)
    rejected = pd.concat([block.rejected for block in blocks], ignore_index=True)
    pd.testing.assert_frame_equal(valid, whole.valid)
    # pandera reports the failing values of the rows it checks together in one column: numbers among text show as
    # given (2), numbers alone as floats (2.0), whether those rows are a block, a table or a `pynomaly score` batch.
    shown = {"_errors": lambda rows: rows["_errors"].str.replace(r"np\.float64\((.*?)\)", r"\1", regex=True).str.replace(r"(-?\d+)\.0\)", r"\1)", regex=True)}
    pd.testing.assert_frame_equal(rejected.assign(**shown), whole.rejected.assign(**shown), check_dtype=False)
    assert rejected["_row"].tolist() == [1, 2, 3, 4, 5, 6, 7, 9, 13]
    with pytest.raises(DataError, match="hold no values"):  # the whole-table checks still hold
        next(validate_blocks(frame.assign(mean_area=None), config.data, source="t", block_rows=7))


def test_the_expectation_report_keeps_no_reference_to_the_frame(demo_frame):
    # Great Expectations' data source kept the batch: the validate stage's whole table stayed in memory after it.
    import gc
    import weakref

    from pynomaly_core.data.validation import expectation_report

    frame = demo_frame.copy()  # pytest holds the fixture's
    assert expectation_report(frame, demo_config().data)["success"]
    alive = weakref.ref(frame)
    del frame
    gc.collect()
    assert alive() is None


def test_expectations_checked_block_by_block_add_up_to_the_whole_tables_result(demo_frame):
    # A large table goes through Great Expectations a block of rows at a time (memory); the summed result is GE's own.
    from pynomaly_core.data.validation import expectation_report

    config = demo_config()
    frame = demo_frame.copy()
    frame.loc[[5, 150, 390], "mean_texture"] = -1.0  # below the minimum, in three blocks
    frame.loc[[7, 8, 200], "mean_area"] = np.nan  # missing where not nullable
    frame.loc[300, "malignant"] = 2
    whole = expectation_report(frame, config.data)
    blocks = expectation_report(frame, config.data, block_rows=100)
    assert not blocks["success"] and blocks["statistics"] == whole["statistics"]
    assert [r["success"] for r in blocks["results"]] == [r["success"] for r in whole["results"]]
    for mine, theirs in zip(blocks["results"], whole["results"]):
        assert mine["expectation_config"]["kwargs"] == theirs["expectation_config"]["kwargs"]
        assert mine["result"].keys() == theirs["result"].keys()
        for key, value in theirs["result"].items():
            assert mine["result"][key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_missing_column(workdir, demo_frame):
    demo_frame.drop(columns=["mean_radius"]).to_csv("data/raw/bad.csv", index=False)
    with pytest.raises(DataError, match=r"data/raw/bad.csv: missing required column\(s\) mean_radius; found columns: sample_id, mean_texture"):
        stages.validate(_config_on("data/raw/bad.csv"))


def test_whole_column_of_wrong_type_fails_the_stage_and_keeps_the_rows(workdir, demo_frame):
    demo_frame.assign(mean_radius="large").to_csv("data/raw/bad.csv", index=False)
    config = _config_on("data/raw/bad.csv")
    with pytest.raises(DataError, match=r"393 of 393 rows rejected \(100%\), more than data.max_rejected_share=10%; most frequent reasons: mean_radius: coerce_dtype\('float64'\)"):
        stages.validate(config)
    assert len(pd.read_csv(config.paths.quarantine)) == 393


def test_all_nan_column(workdir, demo_frame):
    demo_frame.assign(mean_area=float("nan")).to_csv("data/raw/bad.csv", index=False)
    with pytest.raises(DataError, match=r"column\(s\) mean_area hold no values \(every row is missing\)"):
        stages.validate(_config_on("data/raw/bad.csv"))


def test_a_missing_value_of_a_nullable_column_is_valid_in_a_one_row_batch(demo_frame):
    """A served request is one row: its missing nullable value is not an empty column."""
    data = demo_config().data
    data = data.model_copy(update={"columns": {**data.columns, "mean_area": data.columns["mean_area"].model_copy(update={"nullable": True})}})
    row = demo_frame.drop(columns=["malignant"]).head(1).assign(mean_area=float("nan"))
    result = validate(row, data, with_label=False)
    assert len(result.valid) == 1 and result.valid["mean_area"].isna().all() and result.rejected.empty


def test_empty_file(workdir):
    open("data/raw/empty.csv", "w").close()
    with pytest.raises(DataError, match="data/raw/empty.csv is empty: expected a header row and data rows"):
        stages.validate(_config_on("data/raw/empty.csv"))


def test_header_only_file(workdir, demo_frame):
    demo_frame.head(0).to_csv("data/raw/header.csv", index=False)
    with pytest.raises(DataError, match="data/raw/header.csv has no data rows"):
        stages.validate(_config_on("data/raw/header.csv"))


def test_unparsable_file(workdir):
    with open("data/raw/broken.csv", "w") as handle:
        handle.write('a,b,c\n1,2,3\n4,"5,6\n7,8,9,10,11\n')
    with pytest.raises(DataError, match="cannot parse data/raw/broken.csv"):
        stages.validate(_config_on("data/raw/broken.csv"))
    with open("data/raw/broken.parquet", "wb") as handle:
        handle.write(b"not parquet at all")
    with pytest.raises(DataError, match="cannot parse data/raw/broken.parquet"):
        read_table("data/raw/broken.parquet")


def test_parquet_input(workdir, demo_frame):
    demo_frame.to_parquet("data/raw/cells.parquet")
    assert stages.validate(_config_on("data/raw/cells.parquet")).n_valid == 393


def test_sql_query_on_postgresql(workdir, demo_frame, postgres_url):
    engine = sqlalchemy.create_engine(postgres_url)
    demo_frame.to_sql("pynomaly_cells", engine, if_exists="replace", index=False)
    try:
        config = _config_on(postgres_url, query="SELECT * FROM pynomaly_cells WHERE sample_id > 100")
        result = stages.validate(config)
        assert result.n_valid == int((demo_frame.sample_id > 100).sum())
        with pytest.raises(DataError, match='relation "no_such_table" does not exist'):
            stages.validate(_config_on(postgres_url, query="SELECT * FROM no_such_table"))
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("DROP TABLE pynomaly_cells"))
        engine.dispose()


def test_categorical_columns_are_checked_against_allowed_values():
    config = demo_config()
    columns = {"size": {"type": "str", "allowed": ["S", "M", "L"]}, "weight": {"type": "float", "min": 0}}
    data = config.data.model_copy(update={"columns": {k: type(config.data.columns["mean_radius"])(**v) for k, v in columns.items()}, "label_column": None})
    result = validate(pd.DataFrame({"size": ["S", "XL", "M"], "weight": [1.0, 2.0, 3.0]}), data)
    assert result.rejected["_errors"].tolist() == ["size: isin(['S', 'M', 'L']) (got 'XL')"]
    assert result.valid["size"].tolist() == ["S", "M"]


def _pandera_only(frame: pd.DataFrame, data) -> tuple[pd.DataFrame, list[int], list[str]]:
    """The reference: pandera's lazy validation of the whole frame (what `validate` did for every batch)."""
    from pynomaly_core.data.validation import _pandera_split, build_schema

    frame = frame.reset_index(drop=True)
    valid, reasons = _pandera_split(frame, build_schema(data), "input")
    return valid.reset_index(drop=True), [i + 1 for i in sorted(reasons)], ["; ".join(reasons[i]) for i in sorted(reasons)]


def _random_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Columns of every type, with the values each rule rejects sprinkled in: missing, inf, 1e31,
    out of range, not allowed, and, in some frames, text in a numeric column."""
    def sprinkle(values, bad):
        values = pd.Series(values, dtype=object)
        hits = rng.random(n) < 0.15
        values[hits] = rng.choice(np.array(bad, dtype=object), hits.sum())
        return values

    frame = pd.DataFrame({
        "f": sprinkle(rng.uniform(0, 10, n), [np.nan, np.inf, -np.inf, 1e31, -3.0, 11.0]).astype(float),
        "g": sprinkle(rng.normal(size=n), [np.nan, np.inf, -1e31]).astype(float),
        "i": sprinkle(rng.integers(0, 6, n), [None, 9, -1]).astype("Int64"),
        "s": sprinkle(rng.choice(["a", "b"], n), [None, "c", "A"]),
        "b": sprinkle(rng.choice([True, False], n), [None]),
        "label": sprinkle(rng.integers(0, 2, n), [2, None]),
        "note": rng.choice(["x", "y"], n),  # extra column: kept as is
    })
    if rng.random() < 0.3:
        frame["f"] = frame["f"].astype(object)
        frame.loc[rng.integers(0, n), "f"] = "large"
    return frame


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_checks_reject_exactly_what_pandera_rejects(seed):
    """`validate` runs pandera's checks column by column and sends only failing rows through
    pandera's lazy validation: the valid rows, their types, the rejected rows and every reason
    are the same as pandera's on the whole frame."""
    config = demo_config()
    spec = type(config.data.columns["mean_radius"])
    columns = {"f": spec(min=0, max=10), "g": spec(nullable=True), "i": spec(type="int", min=0, max=5, nullable=True),
               "s": spec(type="str", allowed=["a", "b"], nullable=True), "b": spec(type="bool")}
    data = config.data.model_copy(update={"columns": columns, "label_column": "label"})
    frame = _random_frame(np.random.default_rng(seed), 400)

    result = validate(frame, data)
    valid, rows, reasons = _pandera_only(frame, data)
    assert len(rows) > 0
    pd.testing.assert_frame_equal(result.valid, valid)
    assert result.rejected["_row"].tolist() == rows
    assert result.rejected["_errors"].tolist() == reasons
