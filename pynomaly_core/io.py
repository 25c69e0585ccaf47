"""Loading and writing tables: CSV, Parquet, or a SQL query through SQLAlchemy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


class DataError(ValueError):
    """Input that cannot be used; the message says which file, column or row, and what was expected."""


def read_table(source: str | Path, query: str | None = None) -> pd.DataFrame:
    if query is not None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(str(source))
        try:
            with engine.connect() as connection:
                return pd.read_sql_query(sqlalchemy.text(query), connection)
        except sqlalchemy.exc.SQLAlchemyError as err:
            raise DataError(f"query on {engine.url.render_as_string(hide_password=True)} failed: {err.orig or err}") from err
        finally:
            engine.dispose()
    path = Path(source)
    if not path.exists():
        raise DataError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".gz"):
            frame = pd.read_csv(path)
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}'; expected .csv or .parquet")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot parse {path}: {err}") from None
    if frame.empty:
        raise DataError(f"{path} has no data rows")
    return frame


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
