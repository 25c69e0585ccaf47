"""Validate a batch against the schema in the config.

pandera is the gate: rows that break a rule are quarantined with their row number, column
and reason; the batch fails only when it cannot be used at all. Great Expectations runs the
same rules as an expectation suite and its result is kept as the batch's data-quality report.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from ..config import ColumnSpec, DataConfig
from ..errors import DataError

PANDAS_TYPES = {"float": "float64", "int": "Int64", "str": "string", "bool": "boolean"}
ROW_COLUMN = "_row"  # 1-based position of the record in the input
ERRORS_COLUMN = "_errors"
# The largest magnitude a float column takes unless its config sets min/max. Tree and neural
# detectors cast to float32, which overflows at 3.4e38, and the scaler divides by a column's
# spread first: 1e30 leaves eight orders of magnitude for that, while squares and sums of squares
# in float64 (distances, variances; max 1.8e308) stay far from overflowing.
FLOAT_LIMIT = 1e30
LABEL_SPEC = ColumnSpec(type="int", allowed=[0, 1])


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    rejected: pd.DataFrame  # the rejected input rows as given, plus _row and _errors
    n_rows: int

    @property
    def rejected_share(self) -> float:
        return len(self.rejected) / self.n_rows

    def report(self, include_share: bool = True) -> dict:
        # Every row is valid or rejected; a streamed validation (`stages.validate`) keeps the rejected rows only.
        counts = {"n_rows": self.n_rows, "n_valid": self.n_rows - len(self.rejected), "n_rejected": len(self.rejected)}
        return {**counts, "rejected_share": round(self.rejected_share, 6)} if include_share else counts


def value_range(spec: ColumnSpec) -> tuple[float | None, float | None]:
    """The column's bounds: its configured min and max, and +-FLOAT_LIMIT for a float column without them."""
    if spec.type != "float":
        return spec.min, spec.max
    return (-FLOAT_LIMIT if spec.min is None else spec.min), (FLOAT_LIMIT if spec.max is None else spec.max)


def _column_checks(spec: ColumnSpec) -> list[pa.Check]:
    # inf and -inf are rejected whatever the bounds: no scaler or detector can use them.
    checks = [pa.Check(np.isfinite, name="finite")] if spec.type == "float" else []
    low, high = value_range(spec)
    if low is not None:
        checks.append(pa.Check.ge(low))
    if high is not None:
        checks.append(pa.Check.le(high))
    if spec.allowed is not None:
        checks.append(pa.Check.isin(spec.allowed))
    return checks


def build_schema(data: DataConfig, with_label: bool = True) -> pa.DataFrameSchema:
    columns = {
        name: pa.Column(PANDAS_TYPES[spec.type], _column_checks(spec), nullable=spec.nullable, coerce=True)
        for name, spec in data.columns.items()
    }
    if with_label and data.label_column:
        columns[data.label_column] = pa.Column(PANDAS_TYPES[LABEL_SPEC.type], _column_checks(LABEL_SPEC), nullable=False, coerce=True)
    return pa.DataFrameSchema(columns)


@functools.lru_cache(maxsize=16)
def _cached_schema(data_json: str, with_label: bool) -> pa.DataFrameSchema:
    # Building the schema costs more than checking one row with it (a served request is one row).
    return build_schema(DataConfig.model_validate_json(data_json), with_label)


def required_columns(data: DataConfig, with_label: bool = True) -> list[str]:
    extra = [data.label_column] if with_label and data.label_column else []
    return [*data.columns, *extra]


def validate(frame: pd.DataFrame, data: DataConfig, with_label: bool = True, source: str = "input") -> ValidationResult:
    """Split `frame` into valid rows (coerced to the schema's types) and rejected rows with reasons.

    Raises DataError when there are no rows, a column name repeats, a required column is missing
    or a non-nullable feature column holds no value at all.
    """
    _check_frame(frame, data, with_label, source)
    return _split_rows(frame.reset_index(drop=True), data, with_label, source)


# Rows validated at a time by `validate_blocks`: the coerced copies and masks of a block, not of the table.
BLOCK_ROWS = 2**18


def validate_blocks(frame: pd.DataFrame, data: DataConfig, with_label: bool = True, source: str = "input",
                    block_rows: int = BLOCK_ROWS) -> Iterator[ValidationResult]:
    """`validate(frame)` a block of rows at a time, the same rows valid and rejected with the same reasons: each
    block's result, its rejected rows' `_row` counted from the start of `frame`. The whole-frame checks
    (`validate`'s DataErrors) run first, on the whole frame."""
    _check_frame(frame, data, with_label, source)
    for start in range(0, len(frame), block_rows):
        result = _split_rows(frame.iloc[start:start + block_rows].reset_index(drop=True), data, with_label, source)
        result.rejected[ROW_COLUMN] += start
        yield result


def _check_frame(frame: pd.DataFrame, data: DataConfig, with_label: bool, source: str) -> None:
    if frame.empty:
        raise DataError(f"{source} has no data rows")
    duplicated = frame.columns[frame.columns.duplicated()].unique().tolist()
    if duplicated:
        raise DataError(f"{source}: duplicate column name(s) {', '.join(map(str, duplicated))}; expected each column once")
    missing = [c for c in required_columns(data, with_label) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {', '.join(missing)}; found columns: {', '.join(map(str, frame.columns))}"
        )
    # A required column with no value at all is a wrong file or mapping; a nullable one may be
    # missing in every row of a batch (a served request is one row).
    required = [name for name, spec in data.columns.items() if not spec.nullable]
    empty = [c for c, is_empty in frame[required].isna().all().items() if is_empty]
    if empty:
        raise DataError(f"{source}: column(s) {', '.join(empty)} hold no values (every row is missing)")


def _split_rows(frame: pd.DataFrame, data: DataConfig, with_label: bool, source: str) -> ValidationResult:
    """`validate` of a frame that passed `_check_frame`, its index 0..n-1."""
    schema = _cached_schema(data.model_dump_json(), with_label)
    checked = _check_columns(frame, schema, data)
    if checked is None:  # a column does not convert as a whole: pandera finds the cells that fail
        valid, reasons = _pandera_split(frame, schema, source)
    else:
        coerced, failing = checked
        valid, reasons = coerced[~failing], {}
        if failing.any():  # only the rows that break a rule go through pandera, which names each failed cell
            passed, reasons = _pandera_split(frame[failing], schema, source)
            if len(passed):
                valid = pd.concat([valid, passed]).sort_index()

    bad_rows = sorted(reasons)
    rejected = frame.loc[bad_rows].copy()
    rejected.insert(0, ROW_COLUMN, [i + 1 for i in bad_rows])
    rejected[ERRORS_COLUMN] = ["; ".join(reasons[i]) for i in bad_rows]
    return ValidationResult(valid.reset_index(drop=True), rejected.reset_index(drop=True), len(frame))


def _check_columns(frame: pd.DataFrame, schema: pa.DataFrameSchema, data: DataConfig) -> tuple[pd.DataFrame, np.ndarray] | None:
    """pandera's coercion and the rules of `_column_checks`, run as vectorised operations on the
    whole batch: the coerced frame and a mask of the rows that break any rule. None when a column
    does not coerce as a whole. (pandera's checks, and pandas' cost per call, cost far more than the
    comparisons; pandera itself then names the failures of the masked rows only.)"""
    # The plain float columns (most features) coerce as one block and are compared as one array.
    floats = [name for name, spec in data.columns.items() if spec.type == "float" and spec.allowed is None]
    try:
        block = frame[floats].astype(PANDAS_TYPES["float"])
    except (TypeError, ValueError):  # pandera's coercion then reports the cells that fail
        return None
    numbers = block.to_numpy()
    specs = [data.columns[name] for name in floats]
    failing = _breaks_range(numbers, specs) | (np.isnan(numbers) & ~np.array([spec.nullable for spec in specs], dtype=bool)).any(axis=1)
    # One concatenation: assigning the block into a copy sets its columns one by one.
    coerced = pd.concat([block, frame.drop(columns=floats)], axis=1)[frame.columns]
    for name, column in schema.columns.items():
        if name in floats:
            continue
        try:
            values = column.dtype.coerce(frame[name])
        except Exception:  # pandera's try_coerce catches any error too, then reports the failing cells
            return None
        if not column.nullable:
            failing |= values.isna().to_numpy()
        failing |= _breaks_rules(values, data.columns.get(name, LABEL_SPEC))
        coerced[name] = values
    return coerced, failing


def _breaks_range(numbers: np.ndarray, specs: list[ColumnSpec]) -> np.ndarray:
    """Rows of `numbers` (float64, a column per spec) with a value that breaks its column's numeric rules of
    `_column_checks`: not finite in a float column, below the minimum, above the maximum. Missing values pass
    (pandera's ignore_na). Numbers are compared as float64, as pandas compares them with float bounds."""
    low, high = np.array([value_range(spec) for spec in specs], dtype="float64").reshape(-1, 2).T  # no bound: NaN
    must_be_finite = np.array([spec.type == "float" for spec in specs], dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN compares False
        broken = (must_be_finite & ~np.isfinite(numbers)) | (numbers < low) | (numbers > high)
    return (broken & ~np.isnan(numbers)).any(axis=1)


def _breaks_rules(values: pd.Series, spec: ColumnSpec) -> np.ndarray:
    """Rows whose value fails one of `_column_checks(spec)`; missing values pass (pandera's ignore_na)."""
    broken = np.zeros(len(values), dtype=bool)
    if spec.type in ("float", "int"):
        broken |= _breaks_range(values.to_numpy(dtype="float64", na_value=np.nan)[:, None], [spec])
    if spec.allowed is not None:
        broken |= ~values.isin(spec.allowed).to_numpy() & values.notna().to_numpy()
    return broken


def _pandera_split(frame: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """pandera's lazy validation: the valid rows (coerced) and, per rejected row index, its reasons."""
    reasons: dict[int, list[str]] = {}
    remaining = frame
    # A value that cannot be coerced hides the column's other checks, so failing rows are set
    # aside and the rest validated again until only valid rows remain.
    for _ in range(3):
        try:
            return schema.validate(remaining, lazy=True), reasons
        except pa.errors.SchemaErrors as err:
            failures = err.failure_cases
        row_level = failures[failures["index"].notna()]
        # One reason per cell; a failed coercion explains the dtype failure that follows it.
        row_level = row_level.sort_values("check", key=lambda c: ~c.str.startswith("coerce"), kind="stable")
        row_level = row_level.drop_duplicates(["index", "column"]).sort_values("index", kind="stable")
        if row_level.empty:
            first = failures.iloc[0]
            raise DataError(f"{source}: column '{first['column']}' failed {first['check']} for the whole column")
        for index, column, check, value in row_level[["index", "column", "check", "failure_case"]].itertuples(index=False):
            reasons.setdefault(int(index), []).append(f"{column}: {check} (got {value!r})")
        remaining = remaining.drop(index=row_level["index"].astype(int).unique())
    raise DataError(f"{source}: rows still fail validation after three passes: {sorted(reasons)[:10]}")


def check_rejected_share(result: ValidationResult, limit: float, source: str) -> None:
    if result.rejected_share > limit:
        worst = result.rejected[ERRORS_COLUMN].str.split("; ").explode().str.split(" \\(got").str[0].value_counts()
        raise DataError(
            f"{source}: {len(result.rejected)} of {result.n_rows} rows rejected ({result.rejected_share:.0%}), "
            f"more than data.max_rejected_share={limit:.0%}; most frequent reasons: "
            + "; ".join(f"{reason} x{count}" for reason, count in worst.head(3).items())
        )


# Rows Great Expectations checks in one run: a run holds about a copy and a half of the rows it is given, whatever
# the number of expectations (on donors x 8, 0.55-0.65 GiB beside the 0.4 GiB table).
EXPECTATION_ROWS = 2**20


def expectation_report(frame: pd.DataFrame, data: DataConfig, with_label: bool = True, block_rows: int = EXPECTATION_ROWS) -> dict:
    """Run the schema as a Great Expectations suite on the batch; returns GE's JSON result. A larger batch is checked
    `block_rows` at a time and the blocks' results are added up (`_merged`)."""
    reports = [_expectation_run(frame.iloc[start:start + block_rows], data, with_label) for start in range(0, max(len(frame), 1), block_rows)]
    return reports[0] if len(reports) == 1 else _merged(reports)


def _merged(reports: list[dict]) -> dict:
    """One suite result from its runs on consecutive blocks of rows: each expectation succeeds when it did on every
    block; element, unexpected and missing counts are summed and the percentages taken of the sums; the partial
    lists are the first blocks' first values (GE's index labels are the table's, as blocks keep the frame's index),
    their value counts counted again. The rest (ids, meta) is the first block's."""
    merged = copy.deepcopy(reports[0])
    for i, result in enumerate(merged["results"]):
        parts = [report["results"][i] for report in reports]
        result["success"] = all(part["success"] for part in parts)
        raised = [part["exception_info"] for part in parts if (part.get("exception_info") or {}).get("raised_exception")]
        if raised:
            result["exception_info"] = raised[0]
        counts = result.get("result") or {}
        for key in ("element_count", "unexpected_count", "missing_count"):
            if counts.get(key) is not None:
                counts[key] = sum(part["result"].get(key) or 0 for part in parts)
        for key in PARTIAL_LISTS:
            if key in counts:
                counts[key] = [value for part in parts for value in part["result"].get(key) or []][:PARTIAL_COUNT]
        if "partial_unexpected_counts" in counts:
            counts["partial_unexpected_counts"] = _counts_added([entry for part in parts for entry in part["result"]["partial_unexpected_counts"]])
        element, unexpected, missing = counts.get("element_count"), counts.get("unexpected_count"), counts.get("missing_count")
        if element and unexpected is not None:  # as GE's _format_map_output computes them
            if missing is None:
                counts["unexpected_percent"] = unexpected / element * 100
            else:
                nonmissing = element - missing
                counts["missing_percent"] = missing / element * 100
                counts["unexpected_percent_total"] = unexpected / element * 100
                counts["unexpected_percent"] = counts["unexpected_percent_nonmissing"] = unexpected / nonmissing * 100 if nonmissing else None
    successful = sum(result["success"] for result in merged["results"])
    evaluated = len(merged["results"])
    merged["success"] = successful == evaluated
    merged["statistics"] = {"evaluated_expectations": evaluated, "successful_expectations": successful,
                            "unsuccessful_expectations": evaluated - successful,
                            "success_percent": successful / evaluated * 100 if evaluated else None}
    return merged


def _counts_added(entries: list[dict]) -> list[dict]:
    """The blocks' value counts added up, most frequent first. A missing value (NaN, shown as None) is counted once
    per entry as GE counts it (NaN equals no other NaN)."""
    totals: dict = {}
    missing = []
    for entry in entries:
        try:
            if entry["value"] is None:
                missing.append(entry)
            else:
                totals[entry["value"]] = totals.get(entry["value"], 0) + entry["count"]
        except TypeError:  # an unhashable value: kept as its block counted it
            missing.append(entry)
    added = [{"value": value, "count": count} for value, count in totals.items()] + missing
    return sorted(added, key=lambda entry: -entry["count"])[:PARTIAL_COUNT]


PARTIAL_LISTS = ("partial_unexpected_list", "partial_unexpected_index_list")
PARTIAL_COUNT = 20  # GE's partial_unexpected_count in its default (SUMMARY) result format


def _expectation_run(frame: pd.DataFrame, data: DataConfig, with_label: bool) -> dict:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("pynomaly")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole batch")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="pynomaly-schema"))
    for name, spec in data.columns.items():
        suite.add_expectation(gxe.ExpectColumnToExist(column=name))
        if not spec.nullable:
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name))
        low, high = value_range(spec)
        if low is not None or high is not None:
            suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=low, max_value=high))
        if spec.allowed is not None:
            suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=spec.allowed))
    if with_label and data.label_column:
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=data.label_column, value_set=[0, 1]))
    validation = context.validation_definitions.add(gx.ValidationDefinition(name="pynomaly", data=batch, suite=suite))
    try:
        return validation.run(batch_parameters={"dataframe": frame}).to_json_dict()
    finally:
        # The data source's execution engine keeps the batch, so the frame would outlive the stage (0.4 GiB for donors x 8).
        context.data_sources.delete("pynomaly")
