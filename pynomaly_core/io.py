"""Loading and writing tables: CSV, Parquet, or a SQL query through SQLAlchemy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


class DataError(ValueError):
    """Input that cannot be used; the message says which file, column or row, and what was expected."""


def source_name(source: str | Path, query: str | None = None) -> str:
    """How messages name a source: the path, or the query's database without its credentials."""
    return str(source) if query is None else f"query on {str(source).split('@')[-1]}"


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
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as err:  # pyarrow: ArrowInvalid, ArrowIOError
            raise DataError(f"cannot parse {path}: {err}") from None
    elif suffix in (".csv", ".txt", ".gz"):
        with _csv_errors(path):
            frame = pd.read_csv(path)
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}'; expected .csv or .parquet")
    if frame.empty:
        raise DataError(f"{path} has no data rows")
    return frame


@contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    """Turn pandas' reading errors into a DataError naming the file, and refuse duplicate column
    names, which pandas would silently rename (`a`, `a.1`)."""
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0]
        duplicated = header[header.duplicated()].unique().tolist()
        if duplicated:
            raise DataError(f"{path}: duplicate column name(s) {', '.join(map(str, duplicated))} in the header; expected each column once")
        yield
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected a header row and data rows") from None
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text: {err.reason} (byte {err.object[err.start:err.end]!r}); expected a UTF-8 CSV file"
        ) from None
    except (pd.errors.ParserError, OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot parse {path}: {err}") from None


def iter_table(source: str | Path, batch_rows: int = 100_000) -> Iterator[pd.DataFrame]:
    """Read a CSV or Parquet file `batch_rows` at a time (Parquet through a pyarrow dataset), so
    a file larger than memory streams through."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.dataset as ds

        try:
            batches = ds.dataset(path, format="parquet").to_batches(batch_size=batch_rows)
            empty = True
            for batch in batches:
                empty = False
                yield batch.to_pandas()
        except (OSError, ValueError) as err:  # pyarrow: ArrowInvalid, ArrowIOError
            raise DataError(f"cannot parse {path}: {err}") from None
        if empty:
            raise DataError(f"{path} has no data rows")
    elif suffix in (".csv", ".txt", ".gz"):
        with _csv_errors(path):
            yield from pd.read_csv(path, chunksize=batch_rows)
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}'; expected .csv or .parquet")


class TableWriter:
    """Append frames to one CSV or Parquet file, batch by batch; the first batch fixes the columns and types."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.parquet = self.path.suffix.lower() in (".parquet", ".pq")
        self._writer = None
        self.n_rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._writer is None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                self._writer = pq.ParquetWriter(self.path, table.schema)
            else:
                table = pa.Table.from_pandas(frame, schema=self._writer.schema, preserve_index=False)
            self._writer.write_table(table)
        else:
            frame.to_csv(self.path, mode="w" if self.n_rows == 0 else "a", header=self.n_rows == 0, index=False)
        self.n_rows += len(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
