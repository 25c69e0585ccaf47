"""Fit time, score time, peak memory and ROC-AUC of each deep backend on three ADBench datasets.

    python benchmarks/backends.py --data ../shared/benchmarks/adbench [--datasets cardio thyroid satellite] [--detectors dagmm tf_vae ...]

Each (detector, dataset) runs in its own process, so the peak resident memory it reports
(ru_maxrss) is that run's, framework included. Detectors are fitted unsupervised on all rows
(standardised) with their default hyper-parameters; labels only score the ranking.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess  # nosec B404
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEEP = ["autoencoder", "vae", "deepsvdd", "dagmm", "tf_autoencoder", "tf_vae", "tf_deepsvdd", "jax_autoencoder", "jax_vae"]


def _device(detector: str) -> str:
    """Where the backend ran: `device="auto"` takes a GPU when there is one."""
    backend = detector.split("_")[0] if detector.startswith(("tf_", "jax_")) else "torch"
    if backend == "jax":
        import jax

        return jax.default_backend()
    if backend == "tf":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def one(detector: str, folder: Path, dataset: str) -> dict:
    import numpy as np
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    sys.path.insert(0, str(ROOT))
    from pynomaly_core.detectors.registry import get

    data = np.load(folder / f"{dataset}.npz", allow_pickle=False)
    X, y = StandardScaler().fit_transform(data["X"]), data["y"].astype(int)
    model = get(detector).build({}, contamination=0.1, random_state=0)
    started = time.perf_counter()
    model.fit(X)
    fitted = time.perf_counter()
    scores = model.decision_function(X)
    scored = time.perf_counter()
    return {
        "detector": detector, "dataset": dataset, "rows": len(X), "features": X.shape[1],
        "fit_s": round(fitted - started, 2), "score_s": round(scored - fitted, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "roc_auc": round(float(roc_auc_score(y, scores)), 4),
        "device": _device(detector),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of ADBench <name>.npz files, e.g. ../shared/benchmarks/adbench")
    parser.add_argument("--datasets", nargs="+", default=["cardio", "thyroid", "satellite"])
    parser.add_argument("--detectors", nargs="+", default=DEEP)
    parser.add_argument("--one", nargs=2, metavar=("DETECTOR", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.data, args.one[1])))
        return
    print(f"{'detector':<16}{'dataset':<11}{'rows':>6}{'fit s':>9}{'score s':>9}{'peak MB':>9}{'ROC-AUC':>9}  device", flush=True)
    for dataset in args.datasets:
        for detector in args.detectors:
            run = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--one", detector, dataset], capture_output=True, text=True)  # nosec B603
            if run.returncode:
                print(f"{detector:<16}{dataset:<11} failed: {run.stderr.strip().splitlines()[-1]}", flush=True)
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{detector:<16}{dataset:<11}{r['rows']:>6}{r['fit_s']:>9}{r['score_s']:>9}{r['peak_rss_mb']:>9}{r['roc_auc']:>9}  {r['device']}", flush=True)


if __name__ == "__main__":
    main()
