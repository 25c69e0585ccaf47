"""Throughput and end-to-end latency of `pynomaly stream` on the local Redis (loopback only).

Trains the demo detector (one isolation-forest trial) in a temporary project, then:
1. backlog: N events already in the stream, consumed with several micro-batch sizes -> events/s;
2. paced: a producer thread adds events at a fixed rate while the consumer runs -> latency
   from the input entry's XADD to its result's XADD (both Redis stream ids, ms resolution).
Every loop is bounded by the number of events; the streams are deleted afterwards.

Run:  .venv/bin/python benchmarks/stream.py [--events 20000] [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess  # nosec B404
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_demo(folder: Path):
    from pynomaly_core import stages
    from pynomaly_core.config import load_config

    shutil.copytree(ROOT / "data" / "raw", folder / "data" / "raw")
    os.chdir(folder)
    config = load_config(ROOT / "configs" / "demo.yaml")
    config = config.model_copy(update={"train": config.train.model_copy(update={"n_trials": 1, "detectors": ["iforest"], "progress_bar": False})})
    for name in ("validate", "preprocess", "train", "evaluate", "register"):
        stages.STAGES[name](config)
    return config


def with_streams(config, batch_size: int):
    name = f"pynomaly-bench-{uuid.uuid4().hex[:8]}"
    stream = config.monitoring.stream.model_copy(update={"input": f"{name}:in", "output": f"{name}:out", "batch_size": batch_size, "block_ms": 20})
    return config.model_copy(update={"monitoring": config.monitoring.model_copy(update={"stream": stream})})


def records(n: int) -> list[dict]:
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns=["malignant"])
    rows = frame.astype(str).to_dict("records")
    return [rows[i % len(rows)] for i in range(n)]


def produce(client: redis.Redis, stream: str, events: list[dict], rate: float | None = None) -> None:
    started = time.perf_counter()
    with client.pipeline(transaction=False) as pipe:
        for i, event in enumerate(events):
            pipe.xadd(stream, event)
            if rate is None and i % 1000 == 999:
                pipe.execute()
            elif rate is not None:
                pipe.execute()
                delay = started + (i + 1) / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        pipe.execute()


def latencies_ms(client: redis.Redis, output: str) -> np.ndarray:
    """Result id time minus input id time, per event."""
    ms = lambda entry_id: int(entry_id.split("-")[0])  # noqa: E731
    return np.array([ms(out_id) - ms(fields["event_id"]) for out_id, fields in client.xrange(output)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000, help="backlog size per batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--rate", type=float, default=1000, help="events/s of the paced producer")
    parser.add_argument("--seconds", type=float, default=10, help="length of the paced run")
    args = parser.parse_args()

    from pynomaly_core.monitoring.stream import StreamScorer

    client = redis.Redis(decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:  # start the local server, as `make redis` does
        # Bandit B603/B607: a fixed argv; redis-server from PATH, as `make redis` starts it.
        subprocess.run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", ""], check=True)  # nosec B603 B607
        time.sleep(0.5)
        client.ping()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        config = train_demo(Path(tmp))
        print(f"redis {client.info('server')['redis_version']} on 127.0.0.1:6379, model {config.registry.model_name}@champion (iforest)")
        print(f"\nbacklog of {args.events} events (30 features each):")
        print(f"{'batch size':>10} {'events/s':>10} {'ms/batch':>9}")
        for batch_size in args.batch_sizes:
            bench = with_streams(config, batch_size)
            options = bench.monitoring.stream
            try:
                produce(client, options.input, records(args.events))
                scorer = StreamScorer(bench, consumer="bench")
                totals = scorer.run(idle_exit=True)
                if totals["events"] != args.events or client.xlen(options.output) != args.events:
                    raise RuntimeError(f"consumed {totals['events']} of {args.events} events")
                print(f"{batch_size:>10} {totals['events'] / totals['seconds']:>10.0f} {1000 * totals['seconds'] / totals['batches']:>9.1f}")
            finally:
                client.delete(options.input, options.output)

        n = int(args.rate * args.seconds)
        bench = with_streams(config, 200)
        options = bench.monitoring.stream
        try:
            scorer = StreamScorer(bench, consumer="bench")
            producer = threading.Thread(target=produce, args=(client, options.input, records(n), args.rate))
            producer.start()
            done = 0
            while done < n:  # bounded: stops once every event has a result
                done += scorer.run(max_batches=1)["events"]
            producer.join()
            lat = latencies_ms(client, options.output)
            print(f"\npaced producer, {args.rate:.0f} events/s for {args.seconds:.0f} s ({n} events), batch size <= 200:")
            print(f"end-to-end latency ms: p50 {np.percentile(lat, 50):.0f}  p95 {np.percentile(lat, 95):.0f}  p99 {np.percentile(lat, 99):.0f}  max {lat.max():.0f}")
        finally:
            client.delete(options.input, options.output)


if __name__ == "__main__":
    main()
