"""One reader for every table format: the same demo rows in each format give the same scores, through
`score` (streamed), the validate stage and `pynomaly init`; a wrong suffix, a damaged file, a missing sheet or
key, or a missing extra is a clear error naming the file and what was expected."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pynomaly_core import stages
from pynomaly_core.cli import main
from pynomaly_core.config import ReadOptions, load_config
from pynomaly_core.errors import DataError
from pynomaly_core.data.io import iter_table, read_table
from pynomaly_core.scoring.files import score_file
from tests.conftest import MODEL_URI, demo_config



def write_zstd_csv(frame: pd.DataFrame, path: str) -> None:
    """A zstd-compressed CSV through pyarrow's codec (pandas would need the zstandard package)."""
    with pa.output_stream(path, compression="zstd") as out:
        out.write(frame.to_csv(index=False).encode())


def write_formats(frame: pd.DataFrame) -> dict[str, ReadOptions]:
    """`frame` written in every format the reader knows, each with the options that read it back."""
    frame.to_csv("rows.csv.gz", index=False)
    write_zstd_csv(frame, "rows.csv.zst")
    frame.to_json("rows.jsonl", orient="records", lines=True)
    frame.to_feather("rows.feather")
    frame.to_orc("rows.orc")
    with pd.ExcelWriter("rows.xlsx") as book:
        frame.head(3).to_excel(book, sheet_name="notes", index=False)  # the first sheet is not the table
        frame.to_excel(book, sheet_name="events", index=False)
    frame.to_hdf("rows.h5", key="events", format="table", index=False)
    frame.to_hdf("rows.h5", key="other", format="table", index=False)
    Path("parts").mkdir()
    for part, rows in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[rows].to_parquet(f"parts/day={part}.parquet", index=False)  # a folder of files, no partition keys
    frame.to_csv("rows.log", index=False)  # an unknown suffix, read with an explicit format
    return {
        "rows.csv.gz": ReadOptions(), "rows.csv.zst": ReadOptions(), "rows.jsonl": ReadOptions(), "rows.feather": ReadOptions(),
        "rows.orc": ReadOptions(), "rows.xlsx": ReadOptions(sheet="events"), "rows.h5": ReadOptions(key="events"),
        "parts": ReadOptions(), "parts/*.parquet": ReadOptions(), "rows.log": ReadOptions(format="csv"),
    }


def test_every_format_scores_like_the_csv(registered, demo_frame):
    rows = demo_frame.drop(columns=["malignant"])
    rows.to_csv("rows.csv", index=False)
    formats = write_formats(rows)
    expected = score_file(MODEL_URI, "rows.csv", "expected.parquet")
    expected_scores = pd.read_parquet("expected.parquet")
    assert expected["n_valid"] == len(rows)
    for source, options in formats.items():
        report = score_file(MODEL_URI, source, f"scored-{len(source)}.parquet", batch_rows=100, options=options)
        scored = pd.read_parquet(report["output"])
        assert (report["n_rows"], report["n_valid"]) == (len(rows), len(rows)), source
        # the same rows in the same order, the same scores (a folder's files come in name order)
        assert scored["sample_id"].tolist() == expected_scores["sample_id"].tolist(), source
        np.testing.assert_allclose(scored["score"], expected_scores["score"], rtol=0, atol=1e-9, err_msg=source)


def test_streamed_formats_come_in_batches(workdir, demo_frame):
    formats = write_formats(demo_frame)
    for source, options in formats.items():
        batches = list(iter_table(source, 100, options))
        if source.endswith(".xlsx"):
            assert len(batches) == 1  # openpyxl reads a sheet whole
        else:
            assert len(batches) >= len(demo_frame) // 100 and max(map(len, batches)) <= 100, source
        pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), demo_frame, check_dtype=False)


def test_validate_stage_and_init_read_a_workbook_sheet(workdir, demo_frame, capsys):
    with pd.ExcelWriter("data/raw/cells.xlsx") as book:
        demo_frame.head(3).to_excel(book, sheet_name="notes", index=False)
        demo_frame.to_excel(book, sheet_name="cells", index=False)
    assert main(["init", "data/raw/cells.xlsx", "--sheet", "cells", "--label", "malignant"]) == 0
    config = load_config("configs/cells.yaml")
    assert (config.data.sheet, config.data.format) == ("cells", None)
    assert config.data.columns.keys() == demo_config().data.columns.keys()
    result = stages.validate(config)
    assert (result.n_rows, result.n_rejected) == (len(demo_frame), 0)
    demo = demo_config()
    jsonl = demo.model_copy(update={"data": demo.data.model_copy(update={"source": "data/raw/cells.json", "format": "jsonl"})})
    demo_frame.to_json("data/raw/cells.json", orient="records", lines=True)
    assert stages.validate(jsonl).n_rows == len(demo_frame)


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda f: f.to_csv("rows.tsv.bz2"), ["rows.tsv.bz2"], "rows.tsv.bz2: unknown file type '.bz2'; expected one of .csv.gz, .csv.zst"),
        (lambda f: f.to_csv("rows.parquet"), ["rows.parquet"], "cannot parse rows.parquet as Parquet (by its suffix; set data.format or --format"),
        (lambda f: f.to_csv("rows.parquet"), ["rows.parquet", "--format", "orc"], "cannot parse rows.parquet as ORC: "),
        (lambda f: open("rows.xlsx", "wb").write(b"PK\x03\x04 damaged"), ["rows.xlsx"], "cannot parse rows.xlsx as Excel"),
        (lambda f: open("rows.h5", "wb").write(b"\x89HDF damaged"), ["rows.h5"], "cannot parse rows.h5 as HDF5: the HDF5 library cannot open it"),
        (lambda f: open("rows.csv.gz", "wb").write(b"\x1f\x8b damaged"), ["rows.csv.gz"], "cannot parse rows.csv.gz as CSV"),
        (lambda f: open("rows.csv.zst", "wb").write(b"damaged"), ["rows.csv.zst"], "cannot parse rows.csv.zst as CSV (by its suffix"),
        (lambda f: f.to_excel("rows.xlsx", sheet_name="cells"), ["rows.xlsx", "--sheet", "events"],
         "rows.xlsx: no sheet 'events'; expected one of its sheets: cells"),
        (lambda f: f.to_excel("rows.xlsx", sheet_name="cells"), ["rows.xlsx", "--sheet", "2"], "rows.xlsx: no sheet 2; expected one of its sheets: cells"),
        (lambda f: f.to_hdf("rows.h5", key="cells", format="table"), ["rows.h5", "--key", "events"],
         "rows.h5: no key 'events'; expected one of its tables: /cells"),
        (lambda f: [f.to_hdf("rows.h5", key=k) for k in ("a", "b")], ["rows.h5"], "rows.h5 holds 2 tables (/a, /b); set data.key (--key)"),
        (lambda f: None, ["nowhere/*.parquet"], "no file matches nowhere/*.parquet"),
        (lambda f: f.to_csv("rows.csv.gz", index=False), ["rows.csv.gz", "--format", "jsonl"], "cannot parse rows.csv.gz as JSON Lines: "),
        # main's CSV checks hold in every format whose reader would rename a repeated name or decode text
        (lambda f: write_zstd_csv(f.rename(columns={"mean_texture": "mean_radius"}), "rows.csv.zst"),
         ["rows.csv.zst"], "rows.csv.zst: duplicate column name(s) mean_radius in the header"),
        (lambda f: f.rename(columns={"mean_texture": "mean_radius"}).to_excel("rows.xlsx", index=False),
         ["rows.xlsx"], "rows.xlsx: duplicate column name(s) mean_radius in the header"),
        (lambda f: open("rows.jsonl", "wb").write(b'{"mean_radius": "14\xb72"}\n'), ["rows.jsonl"],
         "rows.jsonl is not UTF-8 text: invalid start byte (byte b'\\xb7'); expected a UTF-8 JSON Lines file"),
    ],
)
def test_bad_table_is_a_clear_error_at_the_cli(workdir, demo_frame, capsys, make, args, message):
    make(demo_frame)
    assert main(["init", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [(["rows.tsv.bz2"], "rows.tsv.bz2: unknown file type '.bz2'"), (["nowhere/*.parquet"], "no file matches nowhere/*.parquet"),
     (["parts", "--format", "csv"], "parts: a folder or glob is read as a dataset of Parquet, Feather or ORC files, not CSV")],
)
def test_monitor_refuses_an_unreadable_batch_before_it_starts(workdir, demo_frame, capsys, args, message):
    demo_frame.to_csv("rows.tsv.bz2")
    Path("parts").mkdir()
    assert main(["monitor", "--batch", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("fmt, source, package", [("excel", "rows.xlsx", "openpyxl"), ("hdf5", "rows.h5", "tables")])
def test_missing_extra_is_named(workdir, demo_frame, monkeypatch, fmt, source, package):
    demo_frame.to_excel("rows.xlsx", index=False)
    demo_frame.to_hdf("rows.h5", key="cells", format="table")
    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
    with pytest.raises(DataError, match=rf"reading {'Excel' if fmt == 'excel' else 'HDF5'} \({source}\) needs the '{package}' package: "
                                        rf"pip install 'pynomaly\[{fmt}\]'"):
        read_table(source)
