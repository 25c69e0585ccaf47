"""Batch scoring of a large Parquet file with the registered model: rows/s and peak memory.

    python benchmarks/batch_scoring.py --data ../shared/benchmarks/adbench [--repeat 1] [--batch-rows 100000]

Trains a detector (IForest) on a 20,000-row sample of ADBench `donors`, registers it in a
temporary MLflow store, writes all 619,326 rows (times --repeat: 16 gives ~10 M rows, built
batch by batch) to Parquet and runs `pynomaly score` on it in a child process, whose peak RSS
is read from the kernel (wait4). Target: peak RSS <= 2 GiB.
"""

from __future__ import annotations

import argparse
import os
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import npz_frame, project_config  # noqa: E402
from pynomaly_core import stages  # noqa: E402
from pynomaly_core.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True, help="folder holding ADBench's donors.npz, e.g. ../shared/benchmarks/adbench")
    parser.add_argument("--repeat", type=int, default=1, help="copies of donors in the input file (16: ~10 M rows)")
    parser.add_argument("--batch-rows", type=int, default=100_000)
    args = parser.parse_args()
    frame = npz_frame(args.data / "donors.npz")
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        config = load_config(project_config(frame.sample(20_000, random_state=0), Path(tmp), "donors", n_trials=1, detectors=["iforest"]))
        for stage in ("validate", "preprocess", "train", "evaluate", "register"):
            stages.STAGES[stage](config)

        features = frame.drop(columns=["label"])
        table = pa.Table.from_pandas(features, preserve_index=False)
        with pq.ParquetWriter("input.parquet", table.schema) as writer:
            for _ in range(args.repeat):
                writer.write_table(table, row_group_size=args.batch_rows)
        n_rows = len(features) * args.repeat
        del frame, features, table

        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow/mlflow.db", "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "pynomaly_core.cli", "score", "--model", "models:/donors-detector@champion",
                   "--batch-rows", str(args.batch_rows), "input.parquet", "scored.parquet"]
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)  # nosec B603
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        if status != 0:
            sys.exit(f"scoring failed with status {status}")
        scored = pq.ParquetFile("scored.parquet").metadata.num_rows
        print(f"rows: {n_rows:,} in, {scored:,} scored, batch {args.batch_rows:,} rows")
        print(f"time: {seconds:.1f} s (process start and model load included), {n_rows / seconds:,.0f} rows/s")
        print(f"peak RSS of the scoring process: {usage.ru_maxrss / 1024:,.0f} MiB (target <= 2048 MiB)")


if __name__ == "__main__":
    main()
