"""Where training's memory goes: each stage of a config run in this process under tracemalloc.

For every stage: its traced peak (what Python and numpy allocated, at most, while it ran) and the
process's RSS high-water mark after it; and, for the stage with the largest peak, the source lines
holding the most memory near that peak (a snapshot is taken whenever traced memory passes 110 %
of the largest seen so far). The project folder must hold the config's table; run `pynomaly init`
there first.

Run:  nice -n 10 .venv/bin/python benchmarks/training_memory.py PROJECT_FOLDER configs/NAME.yaml [--top 12]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("validate", "preprocess", "train", "evaluate", "explain", "register")
MIB = 2**20


class PeakSnapshots:
    """Takes a tracemalloc snapshot whenever traced memory passes 110 % of the largest seen."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.best, self.snapshot, self.snapshot_mib = interval, 0, None, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.wait(self.interval):
            current, _ = tracemalloc.get_traced_memory()
            if current > 1.1 * self.best:
                self.best = current
                self.snapshot, self.snapshot_mib = tracemalloc.take_snapshot(), current / MIB

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("config")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    args = parser.parse_args(argv)
    os.chdir(args.folder)
    from pynomaly_core import stages
    from pynomaly_core.config import load_config

    config = load_config(args.config)
    tracemalloc.start(12)
    largest = (0.0, "", None)
    for name in args.stages:
        tracemalloc.reset_peak()
        started = time.perf_counter()
        with PeakSnapshots() as watcher:
            stages.STAGES[name](config)
        _, peak = tracemalloc.get_traced_memory()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{name:10s} {time.perf_counter() - started:7.1f} s   traced peak {peak / MIB:8.1f} MiB   RSS high-water {rss:8.1f} MiB", flush=True)
        if peak / MIB > largest[0]:
            largest = (peak / MIB, name, watcher)
    peak, name, watcher = largest
    print(f"\n{name}: snapshot at {watcher.snapshot_mib:.1f} MiB traced (peak {peak:.1f} MiB); the lines holding most:")
    for stat in watcher.snapshot.statistics("traceback")[: args.top]:
        innermost, *callers = reversed(stat.traceback)  # the allocating line, then the project's lines that led to it
        frames = [innermost, *(f for f in callers if "site-packages" not in f.filename)]
        print(f"{stat.size / MIB:9.1f} MiB  {' <- '.join(f'{Path(f.filename).name}:{f.lineno}' for f in frames[:6])}")


if __name__ == "__main__":
    main()
