"""Batch scoring of a large Parquet file with the registered model: rows/s against the bare
detector, where the time goes, and peak memory.

    python benchmarks/batch_scoring.py --data ../shared/benchmarks/adbench [--repeat 16] [--batch-rows 100000] [--profile] [--engines]

Trains a detector (IForest) on a 20,000-row sample of ADBench `donors`, registers it in a
temporary MLflow store and writes all 619,326 rows (times --repeat: 16 gives ~10 M rows, built
batch by batch) to Parquet. Then, in one run, each pinned to the same single core:
- bare: the registered model's detector, `decision_function` on the preprocessed array of one
  copy of donors (no reading, validation, conversion or writing);
- `pynomaly score` end to end in a child process (start, model load, read, validate, transform,
  score, write), whose peak RSS is the kernel's high-water mark (VmHWM) read while it runs.
Targets: end to end >= 0.7x the bare rows/s; peak RSS <= 2 GiB.
`--profile` runs the child under cProfile and prints the time per phase. `--engines` then scores
the same input with `--engine spark --spark-master local[2]`, `--engine dask --workers 2` (a local
cluster started and stopped by the run) and `--engine dask --scheduler ADDRESS` (2 workers
started before the timed run, as a cluster users already have), all on both cores, and prints
their rows/s against the single-process path's, beside the ceiling of any engine here: the
single-process path started once per core, each on its share of the files, at once. Under each it
prints the CPU seconds its processes spent, by kind (the command, Spark's JVM, the workers). The input
is a folder of Parquet files (each copy of donors in `8 // repeat` files, at least one), so that
Spark and Dask have partitions to share out.
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import npz_frame, project_config  # noqa: E402
from pynomaly_core import stages  # noqa: E402
from pynomaly_core.config import load_config  # noqa: E402

MODEL_URI = "models:/donors-detector@champion"
# A running Dask cluster for `--scheduler`: the local cluster `--workers 2` starts (its workers' environment included),
# in a child process that prints the scheduler's address and stops the cluster when its stdin closes.
CLUSTER = ("import sys; from pynomaly_core.scoring.dask import local_cluster; cluster = local_cluster(2); cluster.wait_for_workers(2); "
           "print(cluster.scheduler_address, flush=True); sys.stdin.read(); cluster.close()")
# Phase: the functions (file suffix, function name) whose cumulative profile time is that phase.
PHASES = {
    "import scoring": [("pynomaly_core/scoring/files.py", "<module>")],
    "load model": [("pynomaly_core/scoring/files.py", "load_model")],
    "read": [("pynomaly_core/data/io.py", "_guarded")],
    "validate": [("pynomaly_core/data/validation.py", "validate")],
    "transform": [("pynomaly_core/data/preprocessing.py", "features"), ("sklearn/compose/_column_transformer.py", "transform")],
    "score": [("pynomaly_core/detectors/base.py", "decision_function")],
    "write": [("pynomaly_core/data/io.py", "write"), ("pynomaly_core/data/io.py", "close")],
}


def phase_seconds(profile: Path) -> dict[str, float]:
    """Seconds per phase from a cProfile dump; `start` is what ran before the command (the CLI's imports), `other` the rest."""
    stats = pstats.Stats(str(profile)).stats  # (file, line, name) -> (calls, primitive calls, own time, cumulative, callers)
    def cumulative(file: str, name: str) -> float:
        # Outermost calls only: a phase function called from itself (recursion) is not counted twice.
        return sum(entry[3] for (path, _, function), entry in stats.items()
                   if path.endswith(file) and function == name and not any(c[0].endswith(file) and c[2] == name for c in entry[4]))
    total = max(entry[3] for entry in stats.values())
    main = sum(entry[3] for (path, _, function), entry in stats.items() if path.endswith("pynomaly_core/cli.py") and function == "main")
    phases = {"start": total - main}
    phases |= {phase: sum(cumulative(*f) for f in functions) for phase, functions in PHASES.items()}
    phases["other"] = main - sum(v for k, v in phases.items() if k != "start")
    return phases


def bare_rows_per_second(features) -> float:
    """The registered model's detector alone on the preprocessed rows."""
    import mlflow

    from pynomaly_core.data.preprocessing import features as model_features

    model = mlflow.pyfunc.load_model(MODEL_URI).unwrap_python_model()
    X = model.pipeline[:-1].transform(model_features(features, model.data_config))
    started = time.perf_counter()
    model.pipeline[-1].decision_function(X)
    return len(X) / (time.perf_counter() - started)


def peak_rss_mib(root: psutil.Process) -> int:
    """The largest peak resident memory (VmHWM, MiB) of `root` and its descendants so far. (wait4's ru_maxrss would also
    count the pages a child shares with this large process until it execs.)"""
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    peak_kib = 0
    for process in processes:
        try:
            peak = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{process.pid}/status").read_text())
        except OSError:  # exited meanwhile
            continue
        peak_kib = max(peak_kib, int(peak.group(1)) if peak else 0)
    return round(peak_kib / 1024)


def start_score(args, source: str = "input", output: str = "scored-pandas.parquet", profile: Path | None = None,
                engine: list[str] = ()) -> subprocess.Popen:
    """`pynomaly score` on the folder `source` in a child process."""
    command = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), "-m", "pynomaly_core.cli",
               "score", "--model", MODEL_URI, "--batch-rows", str(args.batch_rows), *engine, source, output]
    return subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)  # nosec B603: our own CLI, fixed arguments


def cpu_seconds(roots: list[psutil.Process], seen: dict[int, tuple[str, float]]) -> None:
    """Record in `seen` the user + system CPU seconds so far of `roots` and their descendants, by pid, with the kind of
    process: the command itself, a JVM (Spark), or a worker (Spark's Python workers, Dask's worker processes)."""
    for root in roots:
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
                kind = "command" if process == root else "JVM" if process.name() == "java" else "workers"
            except psutil.Error:  # exited meanwhile: its last reading stands
                continue
            seen[process.pid] = (kind, times.user + times.system)


def wait_for(children: list[subprocess.Popen], started: float, cluster: psutil.Process | None = None) -> tuple[float, int, dict[str, float]]:
    """Seconds from `started` until every child has exited, and, read every 0.5 s over them and `cluster` (a running
    cluster's process) with all their children: the largest peak RSS (MiB), and the CPU seconds spent by kind of process
    (the cluster's counted from now)."""
    roots, peak_mib, seen, before = [psutil.Process(child.pid) for child in children] + ([cluster] if cluster else []), 0, {}, {}
    if cluster is not None:
        cpu_seconds([cluster], before)
    while any(child.poll() is None for child in children):  # the high-water mark only rises: the last reading before exit is the peak
        peak_mib = max(peak_mib, *(peak_rss_mib(root) for root in roots))
        cpu_seconds(roots, seen)
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    if any(child.returncode != 0 for child in children):
        sys.exit(f"scoring failed with status {[child.returncode for child in children]}")
    cpu = {}
    for pid, (kind, total) in seen.items():
        kind = "cluster" if cluster is not None and pid == cluster.pid else kind
        cpu[kind] = cpu.get(kind, 0.0) + total - before.get(pid, (kind, 0.0))[1]
    return seconds, peak_mib, cpu


def score_command(args, profile: Path | None = None, engine: list[str] = (), output: str | None = None,
                  cluster: psutil.Process | None = None) -> tuple[float, int, dict[str, float]]:
    """`pynomaly score` on the input folder in a child process: seconds, the largest peak RSS (MiB) of it and its children,
    and CPU seconds by kind of process (`wait_for`)."""
    started = time.perf_counter()
    child = start_score(args, output=output or f"scored-{engine[1] if engine else 'pandas'}.parquet", profile=profile, engine=engine)
    return wait_for([child], started, cluster)


def score_halves_at_once(args) -> tuple[float, int, dict[str, float]]:
    """The ceiling of any engine on this machine: the single-process path started once per core, each pinned to its own
    core and given its share of the input files, with no coordination at all. Seconds until both have finished."""
    files, cores = sorted(Path("input").iterdir()), sorted(os.sched_getaffinity(0))
    started, children = time.perf_counter(), []
    for index, core in enumerate(cores):
        share = Path(f"input-{core}")
        share.mkdir()
        for file in files[index::len(cores)]:
            (share / file.name).symlink_to(file.resolve())
        children.append(start_score(args, source=str(share), output=f"scored-core-{core}.parquet"))
        psutil.Process(children[-1].pid).cpu_affinity([core])
    return wait_for(children, started)


def score_on_running_cluster(args) -> tuple[float, int, dict[str, float]]:
    """`pynomaly score --engine dask --scheduler ADDRESS` on 2 workers started before it (not timed): seconds, the
    largest peak RSS among the scoring process and the cluster's (read while the command runs), and CPU seconds by kind
    of process, the cluster's (scheduler and nannies, and its workers) counted from the command's start."""
    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,  # nosec B603: fixed code
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        address = cluster.stdout.readline().strip()
        if not address:
            sys.exit("the Dask cluster did not start")
        seconds, peak_mib, cpu = score_command(args, engine=["--engine", "dask", "--scheduler", address], output="scored-dask-running.parquet",
                                               cluster=psutil.Process(cluster.pid))
    finally:
        cluster.stdin.close()
        cluster.wait()
    return seconds, peak_mib, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding ADBench's donors.npz, e.g. ../shared/benchmarks/adbench")
    parser.add_argument("--repeat", type=int, default=1, help="copies of donors in the input file (16: ~10 M rows)")
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--cpu", type=int, default=0, help="the core that the bare detector and `pynomaly score` are pinned to")
    parser.add_argument("--profile", action="store_true", help="also run `pynomaly score` under cProfile and print the time per phase")
    parser.add_argument("--engines", action="store_true", help="also score with Spark local[2] and Dask with 2 workers")
    args = parser.parse_args()
    frame = npz_frame(args.data.resolve() / "donors.npz")
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow/mlflow.db"
        config = load_config(project_config(frame.sample(20_000, random_state=0), Path(tmp), "donors", n_trials=1, detectors=["iforest"]))
        for stage in ("validate", "preprocess", "train", "evaluate", "register"):
            stages.STAGES[stage](config)

        features = frame.drop(columns=["label"])
        table = pa.Table.from_pandas(features, preserve_index=False)
        split = max(1, 8 // args.repeat)
        Path("input").mkdir()
        for copy in range(args.repeat):
            for part in range(split):
                rows = table.slice(part * -(-len(table) // split), -(-len(table) // split))
                pq.write_table(rows, f"input/part-{copy * split + part:03d}.parquet", row_group_size=args.batch_rows)
        n_rows = len(features) * args.repeat
        del frame, table

        os.sched_setaffinity(0, {args.cpu})  # this process and its children: one core
        bare = bare_rows_per_second(features)
        del features
        seconds, peak_mib, single_cpu = score_command(args)
        scored = pq.ParquetFile("scored-pandas.parquet").metadata.num_rows
        print(f"rows: {n_rows:,} in, {scored:,} scored, batch {args.batch_rows:,} rows, one core (cpu {args.cpu})")
        print(f"bare decision_function (preprocessed array)   {bare:10,.0f} rows/s")
        print(f"pynomaly score end to end ({seconds:6.1f} s)       {n_rows / seconds:10,.0f} rows/s   "
              f"ratio {n_rows / seconds / bare:.2f} x (target >= 0.7)")
        print(f"peak RSS of the scoring process: {peak_mib:,} MiB (target <= 2048 MiB)")
        print(f"CPU of the scoring process: {sum(single_cpu.values()):.1f} s (engines below: CPU of every process, by kind)")
        if args.profile:
            profiled_seconds, _, _ = score_command(args, profile=Path(tmp, "score.prof"))
            print(f"\nper phase, under cProfile ({profiled_seconds:.1f} s wall):")
            for phase, phase_time in phase_seconds(Path(tmp, "score.prof")).items():
                print(f"  {phase:<16} {phase_time:7.2f} s")
        if args.engines:
            os.sched_setaffinity(0, range(os.cpu_count()))
            print(f"\nengines on {os.cpu_count()} cores, against the single-process path above ({n_rows / seconds:,.0f} rows/s):")
            runs = {"ceiling: the single process once per core": lambda: score_halves_at_once(args),
                    "spark --spark-master local[2]": lambda: score_command(args, engine=["--engine", "spark", "--spark-master", "local[2]"]),
                    "dask --workers 2 (cluster started by the run)": lambda: score_command(args, engine=["--engine", "dask", "--workers", "2"]),
                    "dask --scheduler (2 workers already running)": lambda: score_on_running_cluster(args)}
            for label, run in runs.items():
                engine_seconds, engine_peak, cpu = run()
                print(f"  {label:<46} {engine_seconds:7.1f} s  {n_rows / engine_seconds:10,.0f} rows/s  "
                      f"{seconds / engine_seconds:.2f} x{'' if label.startswith('ceiling') else ' (target >= 1.6)'}; "
                      f"largest process peak RSS {engine_peak:,} MiB")
                print(f"  {'':<46} CPU {sum(cpu.values()):6.1f} s: " + ", ".join(f"{kind} {value:.1f} s" for kind, value in sorted(cpu.items())))


if __name__ == "__main__":
    main()
