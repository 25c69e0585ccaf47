"""Trials per minute with 1 and 2 Dask worker processes joining one Optuna study on PostgreSQL.

    python benchmarks/parallel_trials.py --data ../shared/benchmarks/adbench [--dataset cardio] [--trials 24]

Runs the tuning flow (Prefect + prefect-dask LocalCluster) on an ADBench table; each worker
count gets a fresh study in the database `pynomaly_bench_optuna`. Prints wall-clock trials per
minute (cluster start included) and the rate between the first trial's start and the last
trial's end (cluster start excluded).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pynomaly_core import stages  # noqa: E402
from benchmarks.overhead import npz_frame, project_config  # noqa: E402
from pynomaly_core.config import load_config  # noqa: E402

DB = "pynomaly_bench_optuna"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def fresh_database() -> str:
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DB}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True, help="folder of ADBench <name>.npz files, e.g. ../shared/benchmarks/adbench")
    parser.add_argument("--dataset", default="cardio")
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args()
    data = args.data.resolve()  # before changing into the scratch folder
    os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
    os.environ.pop("PYNOMALY_OPTUNA_STORAGE", None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from flows.tuning import tune_in_parallel

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        frame = npz_frame(data / f"{args.dataset}.npz")
        detectors = ["iforest", "knn", "lof", "hbos", "copod", "ocsvm"]
        base = load_config(project_config(frame, Path(tmp), args.dataset, n_trials=args.trials, pruning=False, detectors=detectors))
        stages.validate(base)
        stages.preprocess(base)
        rates = {}
        for workers in (1, 2):
            storage = fresh_database()
            config = base.model_copy(update={"train": base.train.model_copy(update={"workers": workers, "storage": storage})})
            started = time.perf_counter()
            study_name = tune_in_parallel(config)
            wall = time.perf_counter() - started
            trials = optuna.load_study(study_name=study_name, storage=storage).trials
            busy = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
            rates[workers] = len(trials) / busy * 60
            print(f"{workers} worker(s): {len(trials)} trials, {len(trials) / wall * 60:.1f} trials/min wall-clock, "
                  f"{rates[workers]:.1f} trials/min between first and last trial")
        print(f"speed-up 2 vs 1 workers: {rates[2] / rates[1]:.2f}x ({os.cpu_count()} CPUs)")
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()
