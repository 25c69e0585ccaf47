"""AUCROC of the reference-keeping detectors (KNN, LOF, KDE, OCSVM) fitted on every training row
against the seeded sample of `detectors.reference.REFERENCE_ROWS` they keep by default.

The ADBench protocol (`bench.adbench_split`) fits on at most 7,000 rows, below the bound, so it
cannot show the bound's effect: here the development datasets with more rows than the protocol
keeps are sampled to at most --rows rows (seeded), split 70/30 stratified and min-max scaled as
the protocol does, and each detector is fitted twice on the same training rows. Test AUCROC,
out of sample; the bound is fixed (not tuned on these figures).

Run:  nice -n 10 .venv/bin/python benchmarks/reference_rows.py /work/shared/benchmarks/adbench [--rows 25000] [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pynomaly_core.selection.bench import load_dataset  # noqa: E402
from pynomaly_core.detectors import pyod, reference  # noqa: E402
from pynomaly_core.detectors.registry import get  # noqa: E402


def split(X, y, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    if len(X) > rows:
        keep = rng.choice(len(X), rows, replace=False)
        X, y = X[keep], y[keep]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, shuffle=True, stratify=y, random_state=seed)
    scaler = MinMaxScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_test


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rows", type=int, default=25_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--detectors", nargs="+", default=sorted(pyod.REFERENCE_MODELS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = []
    for path in sorted(args.folder.glob("*.npz")):
        X, y = load_dataset(path)
        if 0.7 * min(len(X), args.rows) <= reference.REFERENCE_ROWS:
            continue  # the bound does not bind
        for seed in args.seeds:
            X_train, X_test, y_test = split(X, y, args.rows, seed)
            for name in args.detectors:
                row = {"dataset": path.stem, "seed": seed, "detector": name, "train_rows": len(X_train)}
                for setting, limit in (("all_rows", None), ("bounded", reference.REFERENCE_ROWS)):
                    started = time.perf_counter()
                    detector = get(name).build({"reference_rows": limit}, 0.1, seed).fit(X_train)
                    row[setting] = round(float(roc_auc_score(y_test, detector.decision_function(X_test))), 4)
                    row[f"{setting}_seconds"] = round(time.perf_counter() - started, 1)
                row["difference"] = round(row["bounded"] - row["all_rows"], 4)
                results.append(row)
                print(json.dumps(row), flush=True)
    differences = [r["difference"] for r in results]
    if differences:
        print(f"bounded - all rows: mean {np.mean(differences):+.4f}, worst {min(differences):+.4f} over {len(differences)} dataset x seed x detector")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
