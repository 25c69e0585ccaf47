"""Loading and writing tables: CSV (also .gz, .zst), JSON Lines, Parquet (a file, folder or glob), Arrow IPC/Feather,
ORC, Excel, HDF5, or a SQL query through SQLAlchemy. One reader, chosen by suffix or `data.format`, for every entry point."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import glob
import os
import re
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ..config import ReadOptions
from ..errors import DataError


# Rows read, validated and scored at a time by `pynomaly score` and its Dask engine (`--batch-rows`).
BATCH_ROWS = 100_000
# Rows converted to Arrow at a time when a frame is written to Parquet (each becomes a row group at most).
WRITE_ROWS = 2**18


def source_name(source: str | Path, query: str | None = None) -> str:
    """How messages name a source: the path, or the query's database without its credentials."""
    return str(source) if query is None else f"query on {str(source).split('@')[-1]}"


# Each format's suffixes, longest first where one ends another; CSV and JSON Lines may be compressed.
SUFFIXES = {
    "csv": (".csv.gz", ".csv.zst", ".csv", ".txt"),
    "jsonl": (".jsonl.gz", ".jsonl.zst", ".jsonl", ".ndjson"),
    "parquet": (".parquet", ".pq"),
    "feather": (".feather", ".arrow", ".ipc"),
    "orc": (".orc",),
    "excel": (".xlsx", ".xlsm"),
    "hdf5": (".h5", ".hdf5", ".hdf"),
}
NAMES = {"csv": "CSV", "jsonl": "JSON Lines", "parquet": "Parquet", "feather": "Arrow IPC/Feather", "orc": "ORC", "excel": "Excel", "hdf5": "HDF5"}
EXTRAS = {"excel": ("openpyxl", "excel"), "hdf5": ("tables", "hdf5")}  # format: (the package pandas needs, the pynomaly extra)
DATASET_FORMATS = {"parquet": "parquet", "feather": "ipc", "orc": "orc"}  # read through a pyarrow dataset: a file, a folder or a glob
READ_ERRORS = (pd.errors.ParserError, OSError, EOFError, ValueError, zipfile.BadZipFile)


def locate(source: str | Path) -> Path | list[str]:
    """The file or folder `source` names, or the files its glob matches; a clear error when there is none."""
    path = Path(source)
    if path.exists():
        return path
    if glob.has_magic(str(source)):
        files = sorted(glob.glob(str(source), recursive=True))
        if not files:
            raise DataError(f"no file matches {source}")
        return files
    raise DataError(f"input file not found: {path}")


def table_stem(source: str | Path) -> str:
    """A source's name without its format suffix, safe in a file name: batch.csv.gz -> batch, data/*.parquet -> data_parquet."""
    name = Path(source).name.lower()
    suffix = next((s for suffixes in SUFFIXES.values() for s in suffixes if name.endswith(s)), "")
    stem = Path(source).name[: len(name) - len(suffix)]
    if glob.has_magic(str(source)):
        stem = f"{Path(source).parent.name}_{stem}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_") or "batch"


def table_format(source: str | Path, options: ReadOptions | None = None) -> str:
    """The format `options.format` names, else the one the suffix says (a folder: Parquet)."""
    name = Path(source).name.lower()
    several = Path(source).is_dir() or glob.has_magic(str(source))
    fmt = options.format if options is not None and options.format is not None else next(
        (fmt for fmt, suffixes in SUFFIXES.items() if name.endswith(suffixes)), "parquet" if Path(source).is_dir() else None
    )
    if fmt is not None and several and fmt not in DATASET_FORMATS:
        raise DataError(f"{source}: a folder or glob is read as a dataset of Parquet, Feather or ORC files, not {NAMES[fmt]}")
    if fmt is not None:
        return fmt
    known = ", ".join(s for suffixes in SUFFIXES.values() for s in suffixes)
    raise DataError(f"{source}: unknown file type '{Path(source).suffix}'; expected one of {known}, a folder of Parquet files, "
                    f"or data.format (--format) set to one of {', '.join(SUFFIXES)}")


def _open(target: Path):
    """The file for pandas, which infers .gz itself; a .zst file through pyarrow's codec, so no extra package is needed."""
    return pa.input_stream(str(target), compression="zstd") if target.name.lower().endswith(".zst") else target


def _refuse_duplicates(header: pd.Series, target: Path) -> None:
    """pandas would silently rename a repeated column name (`a`, `a.1`), so the raw header row is checked first."""
    duplicated = header[header.duplicated()].unique().tolist()
    if duplicated:
        raise DataError(f"{target}: duplicate column name(s) {', '.join(map(str, duplicated))} in the header; expected each column once")


def _frames(source: str | Path, options: ReadOptions | None, batch_rows: int | None) -> Iterator[pd.DataFrame]:
    """The table in frames of `batch_rows` (None: one frame), through the format's pandas or pyarrow reader."""
    target = locate(source)
    fmt = table_format(source, options)
    if fmt in DATASET_FORMATS:
        import pyarrow.dataset as ds

        folder = isinstance(target, list) or target.is_dir()
        dataset = ds.dataset(target if folder else str(target), format=DATASET_FORMATS[fmt], partitioning="hive" if folder else None)
        if batch_rows is None:
            frame = dataset.to_table().to_pandas()
            pa.default_memory_pool().release_unused()  # see read_parquet
            yield frame
        elif fmt == "parquet":
            yield from _parquet_batches(dataset, batch_rows)
        else:
            yield from (batch.to_pandas() for batch in dataset.to_batches(batch_size=batch_rows) if batch.num_rows)
        return
    if fmt == "csv":
        _refuse_duplicates(pd.read_csv(_open(target), header=None, nrows=1, dtype=str).iloc[0], target)
        frames = pd.read_csv(_open(target), chunksize=batch_rows)
    elif fmt == "jsonl":
        frames = pd.read_json(_open(target), lines=True, chunksize=batch_rows)
    elif fmt == "excel":  # a workbook is read whole: openpyxl has no row ranges
        with pd.ExcelFile(target, engine="openpyxl") as book:
            sheet = 0 if options is None or options.sheet is None else options.sheet
            if (sheet not in book.sheet_names) if isinstance(sheet, str) else not 0 <= sheet < len(book.sheet_names):
                raise DataError(f"{target}: no sheet {sheet!r}; expected one of its sheets: {', '.join(book.sheet_names)} "
                                "(data.sheet, --sheet: a name or a 0-based position)")
            first = book.parse(sheet, header=None, nrows=1)
            if len(first):
                _refuse_duplicates(first.iloc[0], target)
            yield book.parse(sheet)
        return
    else:  # hdf5: a pandas HDFStore; a table-format key is read in chunks
        import tables

        try:
            store = pd.HDFStore(target, mode="r")
        except tables.HDF5ExtError:
            raise DataError(f"cannot parse {target} as HDF5: the HDF5 library cannot open it (not an HDF5 file, or damaged)") from None
        with store:
            keys = store.keys()
            key = None if options is None or options.key is None else "/" + options.key.lstrip("/")
            if key is None and len(keys) != 1:
                raise DataError(f"{target} holds {len(keys)} tables ({', '.join(keys) or 'none'}); set data.key (--key) to one of them")
            if key is not None and key not in keys:
                raise DataError(f"{target}: no key {options.key!r}; expected one of its tables: {', '.join(keys) or 'none'}")
            key = key or keys[0]
            chunked = batch_rows is not None and store.get_storer(key).is_table
            yield from store.select(key, chunksize=batch_rows) if chunked else [store.select(key)]
        return
    yield from [frames] if batch_rows is None else frames


def _parquet_batches(dataset, batch_rows: int) -> Iterator[pd.DataFrame]:
    """A Parquet dataset file by file, in the dataset's order, `batch_rows` at a time, with its Hive partition keys as columns.

    pyarrow's dataset scanner decodes far ahead of a consumer slower than the disk: reading
    donors x 16 (38 MB of Parquet, 790 MB decoded) through it held 0.8 to 1.3 GiB, against
    0.24 GiB batch by batch from each file.
    """
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    for fragment in dataset.get_fragments():
        keys = ds.get_partition_keys(fragment.partition_expression)
        with pq.ParquetFile(fragment.path) as parquet:
            for batch in parquet.iter_batches(batch_size=batch_rows):
                if batch.num_rows:
                    yield batch.to_pandas().assign(**keys)


def _guarded(source: str | Path, options: ReadOptions | None, batch_rows: int | None) -> Iterator[pd.DataFrame]:
    """`_frames`, with each reader's error said as which file, read as what, and what went wrong."""
    fmt = None
    try:
        locate(source)
        fmt = table_format(source, options)
        empty = True
        for frame in _frames(source, options, batch_rows):
            empty = empty and frame.empty
            yield frame
        if empty:
            raise DataError(f"{source} has no data rows")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{source} is empty: expected a header row and data rows") from None
    except ImportError as err:
        if fmt not in EXTRAS:
            raise
        package, extra = EXTRAS[fmt]
        raise DataError(f"reading {NAMES[fmt]} ({source}) needs the '{package}' package: pip install 'pynomaly[{extra}]'") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{source} is not UTF-8 text: {err.reason} (byte {err.object[err.start:err.end]!r}); "
                        f"expected a UTF-8 {NAMES[fmt]} file") from None
    except READ_ERRORS as err:
        hint = "" if options is not None and options.format else " (by its suffix; set data.format or --format if it is another format)"
        raise DataError(f"cannot parse {source} as {NAMES[fmt]}{hint}: {err}") from None


def read_table(source: str | Path, query: str | None = None, options: ReadOptions | None = None) -> pd.DataFrame:
    """The whole table: a file (format by suffix or `options.format`), a folder or glob of Parquet files, or a SQL query."""
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
    (frame,) = _guarded(source, options, None)  # one frame; running the generator out checks for rows
    return frame


def read_parquet(path: str | Path) -> pd.DataFrame:
    """A Parquet file the pipeline wrote (validated, training or test rows). pyarrow's allocator keeps the memory of
    the table a frame was converted from until told to return it: on donors x 8 about 0.6 GiB beside a 0.4 GiB frame,
    through the stages that follow."""
    frame = pd.read_parquet(path)
    pa.default_memory_pool().release_unused()
    return frame


def release_memory() -> None:
    """Free what only reference cycles still hold (pandas and Great Expectations objects keep a stage's table in them
    until the next full collection) and hand the memory back to the system: pyarrow's allocator and glibc's malloc
    keep freed memory for reuse. In one process running every stage (`pynomaly run`), each stage would otherwise start
    above what the last one held (on donors x 8, 0.7 GiB above the imports after validation)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator, its own policy
        pass


def iter_table(source: str | Path, batch_rows: int = BATCH_ROWS, options: ReadOptions | None = None) -> Iterator[pd.DataFrame]:
    """The table `batch_rows` at a time where the format allows (CSV and JSON Lines chunks, Parquet, Feather and
    ORC batches through a pyarrow dataset, HDF5 table chunks), so a file larger than memory streams through.
    An Excel sheet comes whole."""
    return _guarded(source, options, batch_rows)


class TableWriter:
    """Append frames to one CSV or Parquet file, batch by batch; the first batch fixes the columns and types.

    The rows go to a hidden temporary file in the same folder, renamed to `path` when the writer
    closes cleanly (`os.replace`, atomic within a file system): a reader never sees a half-written
    file, and a failed run (a full disk, a bad batch) leaves nothing under `path`. Nothing is
    created until the first write.
    """

    def __init__(self, path: str | Path, metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.metadata = metadata  # Parquet schema metadata (which model scored the rows); CSV has none
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.parquet = self.path.suffix.lower() in (".parquet", ".pq")
        self._temporary: Path | None = None
        self._writer = None
        self.n_rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        try:
            if self._temporary is None:  # a unique name; created by the writer, so with the usual permissions
                self._temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp")
            if self.parquet:
                import pyarrow.parquet as pq

                if self._writer is None:
                    schema = pa.Schema.from_pandas(frame, preserve_index=False)
                    if self.metadata:
                        schema = schema.with_metadata({**(schema.metadata or {}), **self.metadata})
                    self._writer = pq.ParquetWriter(self._temporary, schema)
                # A block at a time: pyarrow's copy of a large frame is then one block's, not the frame's.
                for start in range(0, max(len(frame), 1), WRITE_ROWS):
                    self._writer.write_table(pa.Table.from_pandas(frame.iloc[start:start + WRITE_ROWS], schema=self._writer.schema, preserve_index=False))
            else:
                frame.to_csv(self._temporary, mode="w" if self.n_rows == 0 else "a", header=self.n_rows == 0, index=False)
        except OSError as err:
            self.discard()
            raise self._failure(err) from None
        self.n_rows += len(frame)

    def close(self) -> None:
        """Finish the file and move it to `path`."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._temporary is not None:
                os.replace(self._temporary, self.path)
        except OSError as err:
            self.discard()
            raise self._failure(err) from None

    def discard(self) -> None:
        """Remove what was written; `path` is left as it was."""
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
            self._writer = None
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None

    def _failure(self, err: OSError) -> DataError:
        reason = "no space left on device" if err.errno == errno.ENOSPC or "No space left on device" in str(err) else err.strerror or str(err)
        return DataError(f"cannot write {self.path}: {reason} (in {self.path.parent.resolve()}); nothing was written under {self.path}")

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_table(frame: pd.DataFrame, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `frame` whole, as CSV or Parquet by the suffix, atomically (see TableWriter)."""
    with TableWriter(path, metadata) as writer:
        writer.write(frame)
    return Path(path)
