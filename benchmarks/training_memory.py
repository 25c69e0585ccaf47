"""Where training's memory goes: each stage of a config run in this process, its RSS sampled.

A thread samples the process's resident memory every 50 ms and, at each new high, the main
thread's Python stack. For every stage: its time, its own peak RSS, and the project's source lines
(and the library call they made) at the moments the peak was climbing. tracemalloc was tried
first: with the donors table it made the train stage more than ten times slower, while sampling
adds nothing to the stages' own work. The project folder must hold the config's table; run
`pynomaly init` there first.

Run:  nice -n 10 .venv/bin/python benchmarks/training_memory.py PROJECT_FOLDER configs/NAME.yaml [--stages validate preprocess train]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("validate", "preprocess", "train", "evaluate", "explain", "register")
MIB = 2**20


class PeakSampler:
    """Samples RSS; at every new high (by more than `step` MiB) records where the main thread is."""

    def __init__(self, interval: float = 0.05, step: float = 16.0):
        self.interval, self.step = interval, step
        self.process, self.main = psutil.Process(), threading.main_thread().ident
        self.start_mib = self.peak_mib = self.process.memory_info().rss / MIB
        self.climbs: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _where(self) -> str:
        frames = traceback.extract_stack(sys._current_frames()[self.main])
        ours = [f for f in frames if str(ROOT) in f.filename and "benchmarks" not in f.filename]
        inner = frames[-1]
        lines = [f"{Path(f.filename).name}:{f.lineno} {f.line}" for f in ours[-2:]]
        return " <- ".join(reversed(lines)) + (f"  [in {Path(inner.filename).name}:{inner.lineno}]" if inner not in ours else "")

    def _watch(self):
        while not self._stop.wait(self.interval):
            rss = self.process.memory_info().rss / MIB
            if rss > self.peak_mib + self.step:
                self.climbs.append((rss, self._where()))
            self.peak_mib = max(self.peak_mib, rss)

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
    parser.add_argument("--stages", nargs="+", default=list(STAGES))
    parser.add_argument("--climbs", type=int, default=8, help="the largest climbs shown per stage")
    args = parser.parse_args(argv)
    os.chdir(args.folder)
    from pynomaly_core import stages
    from pynomaly_core.config import load_config

    config = load_config(args.config)
    for name in args.stages:
        started = time.perf_counter()
        with PeakSampler() as sampler:
            stages.STAGES[name](config)
        print(f"{name:10s} {time.perf_counter() - started:7.1f} s   RSS at start {sampler.start_mib:7.1f} MiB, peak {sampler.peak_mib:7.1f} MiB", flush=True)
        previous = sampler.start_mib
        steps = []
        for rss, where in sampler.climbs:
            steps.append((rss - previous, rss, where))
            previous = rss
        for grew, rss, where in sorted(steps, key=lambda s: -s[0])[: args.climbs]:
            print(f"    +{grew:7.1f} MiB to {rss:7.1f}  {where}", flush=True)


if __name__ == "__main__":
    main()
