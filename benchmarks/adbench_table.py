"""An ADBench .npz as the Parquet table a new user would bring: its `X` as columns x0..x(d-1) and
its `y` as a 0/1 label column, optionally repeated (donors x 8 for benchmarks/champion.py).

Run:  .venv/bin/python benchmarks/adbench_table.py ../shared/benchmarks/adbench/donors.npz donors_x8.parquet [--label is_fraud] [--repeat 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--label", default="is_fraud")
    parser.add_argument("--repeat", type=int, default=1, help="copies of the rows, one after the other")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    data = np.load(args.npz)
    X, y = np.asarray(data["X"], dtype="float64"), np.asarray(data["y"]).astype("int64")
    columns = {f"x{i}": X[:, i] for i in range(X.shape[1])} | {args.label: y}
    table = pa.table(columns)
    with pq.ParquetWriter(args.out, table.schema) as writer:
        for _ in range(args.repeat):  # one copy at a time: the repeated table never sits in memory
            writer.write_table(table)
    print(f"{args.out}: {len(X) * args.repeat:,} rows x {X.shape[1]} features + {args.label}")


if __name__ == "__main__":
    main()
