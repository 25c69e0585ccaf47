"""`pynomaly init`: a first pipeline config for a user's own table, inferred from the table.

pandera's schema inference gives each column's type, nullability and observed range; they
become `data.columns` rules, with the range widened by MARGIN so that new batches a little
beyond the training data are not rejected. The id and label columns are guessed from their
names and values. Every other key is the pydantic default, written out with its description.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import yaml
from pandera import dtypes
from pydantic import BaseModel

from ..config import ColumnSpec, ConfigError, DataConfig, PathsConfig, PipelineConfig, ReadOptions, RegistryConfig
from ..errors import DataError
from .io import read_table, source_name, table_stem

MARGIN = 0.1  # a numeric range is the observed [min, max] widened by 10 % of its span on each side
MAX_ALLOWED = 20  # a text column with at most this many distinct values gets them as its allowed values
MAX_DISTINCT_SHARE = 0.5  # a text column with more distinct values than this share of its rows is an identifier or free text
ID_WORDS = {"id", "uuid", "guid", "idx", "key", "index"}
LABEL_WORDS = {"label", "target", "anomaly", "anomalous", "outlier", "class"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

HEADER = """\
# Written by `pynomaly init` from {source} ({n_rows} rows, {n_columns} columns).
# Review it, then: pynomaly run --config {path}
#
# data.columns was inferred from the table with pandera's schema inference:
#   type      float, int, bool or str, from the column's dtype
#   nullable  true where the table has a missing value
#   min, max  the observed range widened by {margin:.0%} of its span on each side (rounded down to
#             a whole number for int columns; not below 0 where no value was negative), so
#             that new batches a little beyond the training data are not rejected; each
#             column's comment gives the observed range
#   allowed   the values of a text column with at most {max_allowed} distinct ones
# Every other key is its default (pynomaly_core/config.py), commented where it matters.
"""


def _words(name: str) -> set[str]:
    """The lower-case words of a column name: sample_id, sampleId and Sample ID all hold 'id'."""
    return {word.lower() for word in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)}


def _is_row_number(column: pd.Series) -> bool:
    """An integer column counting 0..n-1 or 1..n in order: a saved index, not a feature."""
    if not pd.api.types.is_integer_dtype(column) or column.isna().any():
        return False
    return column.iloc[0] in (0, 1) and bool((column.diff().iloc[1:] == 1).all())


def _is_binary(column: pd.Series) -> bool:
    """A label candidate: only 0 and 1 (or False and True), both present, none missing."""
    if column.isna().any() or not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        return False
    return set(column.unique().tolist()) == {0, 1}


def guess_id(frame: pd.DataFrame) -> tuple[str | None, str]:
    """The id column and why: a unique, complete integer or text column named like an id, else a row number."""
    def unique_key(name: str) -> bool:
        column = frame[name]
        kind = pd.api.types.infer_dtype(column, skipna=False)
        return kind in ("integer", "string") and column.is_unique

    for name in frame.columns:
        if _words(name) & ID_WORDS and unique_key(name):
            return name, "named like an id, unique and never missing"
    for name in frame.columns:
        if _is_row_number(frame[name]):
            return name, "a row number (consecutive integers in order)"
    return None, "no unique integer or text column is named like an id (" + ", ".join(sorted(ID_WORDS)) + ")"


def guess_label(frame: pd.DataFrame) -> tuple[str | None, str]:
    """The label column and why: a 0/1 column named like a label; the other 0/1 columns are named in the reason."""
    binary = [name for name in frame.columns if _is_binary(frame[name])]
    for name in binary:
        if _words(name) & LABEL_WORDS:
            return name, "a 0/1 column named like a label"
    reason = "no 0/1 column is named like a label (" + ", ".join(sorted(LABEL_WORDS)) + ")"
    if binary:
        reason += "; 0/1 columns that could be it: " + ", ".join(binary)
    return None, reason


def check_label(frame: pd.DataFrame, name: str) -> None:
    if not _is_binary(frame[name]):
        values = ", ".join(map(repr, frame[name].drop_duplicates().head(5).tolist()))
        raise DataError(
            f"--label {name}: expected 0 (normal) and 1 (anomaly), both present and none missing; found {values}"
        )


def _bounds(low: float, high: float, integer: bool) -> tuple[float, float]:
    """[low, high] widened by MARGIN of its span, rounded outward; a column with no negative value stays non-negative."""
    span = high - low
    if integer:  # a whole-number margin, so that a 0/1 flag stays [0, 1]
        margin = math.floor(MARGIN * span)
        lower, upper = low - margin, high + margin
    else:
        # Rounded two digits below the span's magnitude: readable, and still outside the observed range.
        scale = 10.0 ** (math.floor(math.log10(span)) - 2)
        lower = float(f"{math.floor((low - MARGIN * span) / scale) * scale:.12g}")
        upper = float(f"{math.ceil((high + MARGIN * span) / scale) * scale:.12g}")
    return (max(lower, 0) if low >= 0 else lower), upper


def infer_columns(frame: pd.DataFrame) -> tuple[dict[str, ColumnSpec], dict[str, str], dict[str, str]]:
    """The feature rules of every column pandera can type, each column's comment, and the columns left out with why."""
    schema = pa.infer_schema(frame)
    columns, notes, left_out = {}, {}, {}
    for name, inferred in schema.columns.items():
        column = frame[name]
        present = column.dropna()
        distinct = present.nunique()
        dtype = inferred.dtype
        kind = pd.api.types.infer_dtype(present, skipna=True)
        if present.empty:
            left_out[name] = "no values"
            continue
        if distinct == 1:
            left_out[name] = f"one value only ({present.iloc[0]!r}): it tells no row from another"
            continue
        if _is_row_number(column):
            left_out[name] = "a row number (consecutive integers in order), not a measurement"
            continue
        note = [f"{column.isna().sum()} missing"] if inferred.nullable else []
        if dtypes.is_bool(dtype) or kind == "boolean":
            spec = ColumnSpec(type="bool", nullable=inferred.nullable)
        elif dtypes.is_numeric(dtype):
            stats = {check.name: check.statistics for check in inferred.checks}
            low = stats["greater_than_or_equal_to"]["min_value"]
            high = stats["less_than_or_equal_to"]["max_value"]
            if not math.isfinite(low) or not math.isfinite(high):
                finite = pd.to_numeric(present).replace([math.inf, -math.inf], math.nan).dropna()
                low, high = float(finite.min()), float(finite.max())
                note.append("holds infinite values")
            integer = dtypes.is_int(dtype) or dtypes.is_uint(dtype)
            minimum, maximum = _bounds(low, high, integer)
            spec = ColumnSpec(type="int" if integer else "float", min=minimum, max=maximum, nullable=inferred.nullable)
            note.insert(0, f"observed {low:.6g} .. {high:.6g}")
        elif dtypes.is_category(dtype) or kind in ("string", "mixed", "mixed-integer"):
            if distinct <= MAX_ALLOWED:
                allowed = sorted(map(str, present.unique()))
                spec = ColumnSpec(type="str", nullable=inferred.nullable, allowed=allowed)
            elif distinct > MAX_DISTINCT_SHARE * len(present):
                left_out[name] = f"text with {distinct} distinct values in {len(present)} rows: an identifier or free text"
                continue
            else:
                spec = ColumnSpec(type="str", nullable=inferred.nullable)
                note.append(f"{distinct} distinct values: too many to list as allowed")
        else:
            left_out[name] = f"{dtype} is not a feature type (float, int, bool, str); derive numeric columns from it"
            continue
        columns[name] = spec
        if note:
            notes[name] = "; ".join(note)
    return columns, notes, left_out


def default_paths(name: str) -> PathsConfig:
    """Each pipeline's outputs under its own name, so that configs side by side do not overwrite each other."""
    return PathsConfig(
        validated=f"data/validated/{name}.parquet",
        quarantine=f"data/quarantine/{name}_rejected.csv",
        validation_report=f"reports/{name}/validation.json",
        train=f"data/processed/{name}_train.parquet",
        test=f"data/processed/{name}_test.parquet",
        preprocessor=f"models/{name}/preprocessor.joblib",
        model=f"models/{name}/pipeline.joblib",
        training=f"models/{name}/training.json",
        metrics=f"reports/{name}/metrics.json",
        plots=f"reports/{name}/plots",
        figures=f"reports/{name}/figures",
        explanation=f"reports/{name}/explanation.json",
        registration=f"reports/{name}/registration.json",
    )


def _scalar(value) -> str:
    """One value as inline YAML on one line: flow style for a list or mapping, a multi-line query double-quoted."""
    style = '"' if isinstance(value, str) and "\n" in value else None
    return yaml.safe_dump(value, default_flow_style=True, default_style=style, sort_keys=False, width=math.inf).removesuffix("\n...\n").strip()


def _line(indent: int, key: str, value: str, comment: str | None) -> str:
    text = f"{'  ' * indent}{_scalar(key)}:{' ' + value if value else ''}"
    return f"{text}  # {comment}" if comment else text


def _rules(spec: ColumnSpec) -> dict:
    """A column's rules as written: its type and what differs from the defaults; an int column's range in whole numbers."""
    rules = {"type": spec.type} | spec.model_dump(exclude_defaults=True)
    if spec.type == "int":
        rules |= {bound: int(rules[bound]) for bound in ("min", "max") if bound in rules}
    return rules


def _is_section(annotation) -> bool:
    return any(isinstance(arg, type) and issubclass(arg, BaseModel) for arg in (annotation, *getattr(annotation, "__args__", ())))


def _section(model: BaseModel, prefix: str, indent: int, comments: dict[str, str]) -> list[str]:
    """A model's keys in order, each commented with `comments[path]` or its field description.

    A mapping of column rules comes last, one column a line; an unset sub-section (data.series, data.graph) is left out.
    """
    lines = []
    fields = sorted(type(model).model_fields.items(), key=lambda item: isinstance(getattr(model, item[0]), dict))
    for key, field in fields:
        value, path = getattr(model, key), prefix + key
        comment = comments.get(path, field.description)
        if isinstance(value, BaseModel):
            lines += [_line(indent, key, "", comment), *_section(value, path + ".", indent + 1, comments)]
        elif isinstance(value, dict) and value and isinstance(next(iter(value.values())), ColumnSpec):
            lines.append(_line(indent, key, "", comment))
            lines += [_line(indent + 1, name, _scalar(_rules(spec)), comments.get(f"{path}.{name}")) for name, spec in value.items()]
        elif value is not None or not _is_section(field.annotation):
            lines.append(_line(indent, key, _scalar(value), comment))
    return lines


def build_config(
    frame: pd.DataFrame, source: str, name: str, query: str | None = None, label: str | None = None, id_column: str | None = None,
    options: ReadOptions | None = None,
) -> tuple[PipelineConfig, dict[str, str], dict[str, str]]:
    """The config for `frame`, the comments that explain its guesses (by dotted key) and the columns left out with why."""
    shown = source_name(source, query)
    for flag, column in (("--label", label), ("--id", id_column)):
        if column is not None and column not in frame.columns:
            raise DataError(f"{flag} {column}: no such column in {shown}; found columns: {', '.join(map(str, frame.columns))}")
    if label is not None and label == id_column:
        raise DataError(f"--label and --id both name '{label}'; a column is either the id or the label")
    if label is not None:
        check_label(frame, label)
        label_note = "given with --label"
    else:
        label, label_note = guess_label(frame.drop(columns=[id_column] if id_column else []))
        label_note = f"guessed: {label_note}; --label overrides" if label else f"{label_note}; set it, or pass --label"
    if label is not None:
        share = frame[label].astype(int).mean()
        label_note += f"; {share:.1%} of rows are 1 (anomaly)" + (": is 1 really the anomaly?" if share > 0.5 else "")
    if id_column is not None:
        id_note = "given with --id"
    else:
        id_column, id_note = guess_id(frame.drop(columns=[label] if label else []))
        id_note = f"guessed: {id_note}; --id overrides" if id_column else f"{id_note}; --id names one"

    columns, notes, left_out = infer_columns(frame.drop(columns=[c for c in (id_column, label) if c is not None]))
    if not columns:
        reasons = "; ".join(f"{column}: {why}" for column, why in left_out.items()) or "only the id and label columns"
        raise DataError(f"{shown}: no column can be a feature ({reasons})")
    data = DataConfig(source=source, query=query, id_column=id_column, label_column=label, columns=columns,
                      **(options.model_dump(exclude_none=True) if options else {}))
    registry = RegistryConfig(model_name=f"{name}-detector", gate_metric="roc_auc" if label else "selection_score")
    config = PipelineConfig(name=name, data=data, registry=registry, paths=default_paths(name))
    gate = "it needs the label" if label else "no label, so the champion gate compares label-free selection scores"
    comments = {
        "data.id_column": id_note,
        "data.label_column": label_note,
        "registry.gate_metric": f"{RegistryConfig.model_fields['gate_metric'].description}; {gate}",
        "paths": "where each stage writes, named after this config so that pipelines side by side keep apart",
        **{f"data.columns.{column}": note for column, note in notes.items()},
    }
    return config, comments, left_out


def render(config: PipelineConfig, comments: dict[str, str], left_out: dict[str, str], header: str) -> str:
    lines = header.splitlines()
    for line in _section(config, "", 0, comments):
        if line.split("  #")[0].endswith(":") and not line.startswith(" "):
            lines.append("")  # a blank line before each section
        lines.append(line)
        if line.startswith("  columns:") and left_out:
            lines.append("    # left out of the features (add them by hand if they should count):")
            lines += [f"    #   {column}: {why}" for column, why in left_out.items()]
    return "\n".join(lines) + "\n"


def init_config(
    data: str,
    name: str | None = None,
    query: str | None = None,
    label: str | None = None,
    id_column: str | None = None,
    force: bool = False,
    config_dir: str | Path = "configs",
    options: ReadOptions | None = None,
) -> tuple[Path, PipelineConfig, dict[str, str]]:
    """Read the table, infer its config and write it to `config_dir/NAME.yaml`; returns the path, the config and the columns left out."""
    if query is None and "://" in data:
        raise ConfigError("DATA looks like a database URL: pass --query, the SQL whose result is the table")
    if name is None:
        if query is not None:
            raise ConfigError("--name is needed with --query: it names the config, the model and the output paths")
        name = table_stem(data).strip("_.-")
    if not NAME.fullmatch(name or ""):
        raise ConfigError(f"--name '{name}': use letters, digits, '_', '-' and '.', starting with a letter or digit")
    path = Path(config_dir) / f"{name}.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it, or --name to write another")
    frame = read_table(data, query, options)
    config, comments, left_out = build_config(frame, data, name, query, label, id_column, options)
    header = HEADER.format(
        source=source_name(data, query), n_rows=len(frame), n_columns=frame.shape[1], path=path, margin=MARGIN, max_allowed=MAX_ALLOWED
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(config, comments, left_out, header))
    return path, config, left_out
