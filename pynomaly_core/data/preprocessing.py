"""Feature preprocessing: one scikit-learn ColumnTransformer, fitted on training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

from ..config import NEIGHBORS, DataConfig, PreprocessConfig
from ..detectors.graph import NodeGraph

SCALERS = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}


def column_kinds(data: DataConfig) -> tuple[list[str], list[str]]:
    """The numeric feature columns (float, int) and the categorical ones (str, bool), in config order."""
    numeric = [name for name, spec in data.columns.items() if spec.type in ("float", "int")]
    return numeric, [name for name in data.columns if name not in numeric]


def build_preprocessor(data: DataConfig, options: PreprocessConfig) -> ColumnTransformer | NodeGraph:
    numeric, categorical = column_kinds(data)
    transformer = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy=options.numeric_impute), SCALERS[options.scaler]()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
        ],
        verbose_feature_names_out=False,
    )
    # A graph's node rows become a Graph: the features transformed, the edges from the neighbour lists.
    return NodeGraph(transformer, data.id_column, NEIGHBORS) if data.graph else transformer


def split(frame: pd.DataFrame, data: DataConfig, options: PreprocessConfig, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split, stratified on the label when there is one; a series keeps time order (test = the latest rows)."""
    if data.series is not None:
        cut = len(frame) - round(options.test_size * len(frame))
        return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)
    labels = frame[data.label_column] if data.label_column else None
    stratify = labels if labels is not None and labels.value_counts().min() >= 2 else None
    # The positions are split (the same ones scikit-learn picks when given the frame), then each part taken once.
    train, test = train_test_split(np.arange(len(frame)), test_size=options.test_size, random_state=seed, stratify=stratify)
    return _take(frame, train), _take(frame, test)


def _take(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    part = frame.take(rows)
    part.index = pd.RangeIndex(len(part))  # reset_index would copy the rows again
    return part


def input_columns(data: DataConfig) -> list[str]:
    """The columns a model takes: the features, and for a graph the node id and its neighbour ids."""
    return [*data.columns, *((data.id_column, NEIGHBORS) if data.graph else ())]


def features(frame: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    """The feature columns as scikit-learn wants them: float64 numbers, object categories, NaN for
    missing; a graph's node id and neighbour columns pass through."""
    numeric, categorical = column_kinds(data)
    converted = frame[numeric].astype("float64")  # one block: a served row is one call, not one per column
    for name in categorical:
        converted[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)
    passthrough = [name for name in input_columns(data)[len(data.columns):] if name in frame]
    for name in passthrough:
        converted[name] = frame[name]
    return converted[[*data.columns, *passthrough]]


CHUNK_ROWS = 2**16


def transform(preprocessor, frame: pd.DataFrame, data: DataConfig, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """`preprocessor.transform(features(frame, data))` a block of rows at a time into one array: the
    float64 copy and the transformers' intermediate arrays then exist for one block, not the table."""
    blocks = range(0, len(frame), chunk_rows)
    first = preprocessor.transform(features(frame.iloc[:chunk_rows], data))
    if len(frame) <= chunk_rows:
        return first
    out = np.empty((len(frame), first.shape[1]), dtype=first.dtype)
    out[:chunk_rows] = first
    for start in blocks[1:]:
        out[start:start + chunk_rows] = preprocessor.transform(features(frame.iloc[start:start + chunk_rows], data))
    return out
