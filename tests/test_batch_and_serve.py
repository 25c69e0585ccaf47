"""Batch scoring streams a Parquet file through the registered model a batch at a time;
`pynomaly serve` serves the same model over REST."""

import contextlib
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pynomaly_core import cli
from pynomaly_core.errors import DataError
from pynomaly_core.scoring.files import score_file
from tests.conftest import MODEL_URI
from tests.services import serving



def test_parquet_is_scored_in_batches_like_all_at_once(registered, demo_frame):
    rows = pd.concat([demo_frame.drop(columns=["malignant"])] * 3, ignore_index=True)
    rows["mean_area"] = rows["mean_area"].astype(object)
    rows.loc[[7, 650, 1100], "mean_area"] = [-1.0, None, -5.0]  # bad rows in three different batches
    rows["mean_area"] = rows["mean_area"].astype(float)
    pq.write_table(pa.Table.from_pandas(rows), "big.parquet", row_group_size=300)

    report = score_file(MODEL_URI, "big.parquet", "scored.parquet", batch_rows=300)

    assert (report["n_rows"], report["n_valid"], report["n_rejected"]) == (len(rows), len(rows) - 3, 3)
    assert pq.ParquetFile("scored.parquet").metadata.num_row_groups == 4  # written as it went, not at the end
    scored = pd.read_parquet("scored.parquet")
    valid = rows.drop(index=[7, 650, 1100]).reset_index(drop=True)
    expected = mlflow.pyfunc.load_model(MODEL_URI).predict(valid[list(registered.data.columns)])
    np.testing.assert_allclose(scored["score"], expected["score"], rtol=0, atol=1e-9)
    assert scored["sample_id"].tolist() == valid["sample_id"].tolist()
    assert report["n_anomalies"] == int(expected["is_anomaly"].sum())
    rejected = pd.read_csv("scored.rejected.csv")
    assert rejected["_row"].tolist() == [8, 651, 1101]  # positions in the whole file, not the batch
    assert "mean_area" in rejected["_errors"][0] and "mean_area" in rejected["_errors"][1]

    # Scored again with clean rows: the first run's rejected rows are not left beside the new output.
    pq.write_table(pa.Table.from_pandas(valid), "big.parquet")
    assert score_file(MODEL_URI, "big.parquet", "scored.parquet")["n_rejected"] == 0
    assert not Path("scored.rejected.csv").exists()


def test_unreadable_parquet_is_a_clear_error(registered):
    with open("broken.parquet", "wb") as handle:
        handle.write(b"not parquet at all")
    with pytest.raises(DataError, match="cannot parse broken.parquet"):
        score_file(MODEL_URI, "broken.parquet", "out.parquet")


@contextlib.contextmanager
def small_disk(folder, size: str):
    """A tmpfs of `size` mounted on `folder` (needs root, as on CI): a disk that fills up."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_is_a_clear_error_and_leaves_no_partial_file(registered, demo_frame, tmp_path):
    """The scored Parquet is written to a temporary name and renamed when complete: on a disk that
    fills up half way, `pynomaly score` names the file and the cause, exits 2, and the earlier
    file under the final name is untouched; no temporary file is left."""
    rows = pd.concat([demo_frame.drop(columns=["malignant"])] * 4, ignore_index=True)
    pq.write_table(pa.Table.from_pandas(rows), "rows.parquet", row_group_size=500)
    with small_disk(tmp_path / "disk", "96k") as disk:
        earlier = disk / "scored.parquet"
        earlier.write_bytes(b"the previous run's file")
        code, err = _score_cli("--batch-rows", "500", "rows.parquet", str(earlier))
        assert code == 2 and "Traceback" not in err
        assert err.strip() == (f"pynomaly: error: cannot write {earlier}: no space left on device (in {disk}); "
                               f"nothing was written under {earlier}")
        assert os.listdir(disk) == ["scored.parquet"] and earlier.read_bytes() == b"the previous run's file"

        pq.write_table(pa.Table.from_pandas(rows.head(50)), "few.parquet")
        code, err = _score_cli("few.parquet", str(disk / "few.parquet"))
        assert code == 0, err
        assert sorted(os.listdir(disk)) == ["few.parquet", "scored.parquet"]
        assert pq.ParquetFile(disk / "few.parquet").metadata.num_rows == 50


def _score_cli(*args) -> tuple[int, str]:
    """`pynomaly score` with the registered model in this process: exit status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(["score", "--model", MODEL_URI, *args])
    return code, err.getvalue()


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_serve_scores_posted_rows_and_rejects_malformed_payloads(registered, workdir, demo_frame):
    with serving(workdir) as url:
        rows = demo_frame[list(registered.data.columns)].head(4)
        status, body = _post(f"{url}/invocations", json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode())
        assert status == 200, body
        expected = mlflow.pyfunc.load_model(MODEL_URI).predict(rows)
        assert [set(p) for p in body["predictions"]] == [{"score", "is_anomaly"}] * 4
        np.testing.assert_allclose([p["score"] for p in body["predictions"]], expected["score"], rtol=0, atol=1e-9)
        assert [p["is_anomaly"] for p in body["predictions"]] == expected["is_anomaly"].tolist()

        status, body = _post(f"{url}/invocations", b'{"rows": [1, 2')
        assert 400 <= status < 500 and body["message"]
        status, body = _post(f"{url}/invocations", json.dumps({"dataframe_split": rows.drop(columns=["mean_area"]).to_dict(orient="split")}).encode())
        assert 400 <= status < 500 and "mean_area" in body["message"]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_serve_refuses_to_listen_beyond_loopback(host):
    # MLflow's scoring server has no authentication, so nothing but this machine may reach it.
    result = subprocess.run([sys.executable, "-m", "pynomaly_core.cli", "serve", "--host", host, "--port", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"pynomaly: error: --host {host}: pynomaly serve has no authentication, so it listens on loopback only")
    assert "Traceback" not in result.stderr
