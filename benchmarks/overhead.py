"""What the pipeline costs on top of the learning it orchestrates.

1. The training flow vs a bare script doing the same model selection (same code, same trial
   count), final fit, scoring and metrics on ADBench `shuttle` (49,097 rows).
2. The fixed cost of a flow run on the demo data (one trial of one detector).
3. Scoring throughput of the loaded MLflow pyfunc vs bare `decision_function` on ADBench
   `donors` (619,326 rows).

Run:  .venv/bin/python benchmarks/overhead.py --data ../shared/benchmarks/adbench [--trials 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Detectors whose fit stays in seconds on shuttle's 34k training rows (KDE, OCSVM and the
# neighbour methods take minutes per fold there).
SCALABLE = ["iforest", "sk_iforest", "copod", "ecod", "hbos", "pca", "loda", "gmm", "mcd", "inne", "cblof"]


def npz_frame(path: Path) -> pd.DataFrame:
    data = np.load(path)
    frame = pd.DataFrame(data["X"], columns=[f"x{i}" for i in range(data["X"].shape[1])])
    frame["label"] = data["y"].astype(int)
    return frame


def project_config(frame: pd.DataFrame, folder: Path, name: str, **train) -> Path:
    """A copy of the demo config pointed at `frame`, written into `folder`."""
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    source = folder / "data" / "raw" / f"{name}.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(source, index=False)
    features = [c for c in frame.columns if c != "label"]
    config["name"] = name
    config["data"].update(source=str(source), id_column=None, label_column="label", columns={c: {"type": "float"} for c in features})
    # The Optuna search (consensus strategy), so both sides run the same trials.
    config["train"].update(strategy="consensus", progress_bar=False, timeout=None, **train)
    config["registry"]["model_name"] = f"{name}-detector"
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def bare_training(frame: pd.DataFrame, config) -> dict:
    """The learning alone: split, scale, the same selection as the flow (its config's strategy), final fit, test metrics."""
    from pynomaly_core.evaluation.metrics import metrics
    from pynomaly_core.data.preprocessing import build_preprocessor, features, split
    from pynomaly_core.selection import make_selector

    train, test = split(frame, config.data, config.preprocess, config.seed)
    preprocessor = build_preprocessor(config.data, config.preprocess)
    X_train = preprocessor.fit_transform(features(train, config.data))
    settings = config.train.model_copy(update={"storage": "sqlite:///:memory:", "progress_bar": False})
    selection = make_selector(settings, config.threshold, config.seed, study_name="bare").select(X_train)
    detector = selection.model
    scores = detector.decision_function(preprocessor.transform(features(test, config.data)))
    return {"detector": selection.detector, **metrics(scores, detector.threshold_, test["label"].to_numpy())}


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def flow_run(config_path: Path):
    from flows.training import training_flow
    from pynomaly_core.config import load_config

    return training_flow(load_config(config_path))


def overhead(data: Path, trials: int) -> None:
    from pynomaly_core.config import load_config

    frame = npz_frame(data / "shuttle.npz")
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        config_path = project_config(frame, Path(tmp), "shuttle", n_trials=trials, detectors=SCALABLE)
        bare, bare_seconds = timed(bare_training, frame, load_config(config_path))
        summary, flow_seconds = timed(flow_run, config_path)
    print(f"\n== shuttle: {len(frame)} rows, {trials} trials")
    print(f"bare script   {bare_seconds:8.1f} s   {bare['detector']}  roc_auc={bare['roc_auc']:.4f}")
    print(f"training flow {flow_seconds:8.1f} s   {summary.training.detector}  roc_auc={summary.evaluation.metrics['roc_auc']:.4f}")
    print(f"ratio         {flow_seconds / bare_seconds:8.2f} x   (target <= 1.5)")


def fixed_cost() -> None:
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv").drop(columns=["sample_id"]).rename(columns={"malignant": "label"})
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        config_path = project_config(frame, Path(tmp), "demo", n_trials=1, detectors=["iforest"])
        _, first = timed(flow_run, config_path)
        _, second = timed(flow_run, config_path)
    print("\n== fixed cost of a flow run on the demo data (1 trial of IForest)")
    print(f"first run (creates the MLflow and Optuna databases) {first:6.1f} s")
    print(f"second run                                          {second:6.1f} s")


def scoring(data: Path) -> None:
    import mlflow

    from pynomaly_core.config import DataConfig
    from pynomaly_core.detectors.registry import get
    from pynomaly_core.scoring.model import model_artifacts
    from pynomaly_core.data.preprocessing import build_preprocessor, features
    from pynomaly_core.config import PreprocessConfig
    from sklearn.pipeline import Pipeline

    frame = npz_frame(data / "donors.npz").drop(columns=["label"])
    data_config = DataConfig(source="donors.npz", columns={c: {"type": "float"} for c in frame.columns})
    sample = frame.sample(10_000, random_state=0)
    preprocessor = build_preprocessor(data_config, PreprocessConfig()).fit(features(sample, data_config))
    detector = get("iforest").build({}, 0.1, 0).fit(preprocessor.transform(features(sample, data_config)))
    with tempfile.TemporaryDirectory() as tmp:
        joblib.dump(Pipeline([("preprocess", preprocessor), ("detector", detector)]), Path(tmp, "pipeline.joblib"))
        mlflow.pyfunc.save_model(
            Path(tmp, "model"), python_model=ROOT / "pynomaly_core" / "scoring" / "model.py",
            artifacts=model_artifacts(Path(tmp, "pipeline.joblib"), data_config, tmp),
            signature=mlflow.models.infer_signature(frame.head()),
        )
        model = mlflow.pyfunc.load_model(str(Path(tmp, "model")))
        X = preprocessor.transform(features(frame, data_config))
        _, bare_seconds = timed(detector.estimator_.decision_function, X)
        _, pyfunc_seconds = timed(model.predict, frame)
    rows = len(frame)
    print(f"\n== scoring donors: {rows} rows, IForest")
    print(f"bare decision_function (preprocessed array) {rows / bare_seconds:10.0f} rows/s")
    print(f"MLflow pyfunc (DataFrame in, schema checks) {rows / pyfunc_seconds:10.0f} rows/s")
    print(f"ratio {bare_seconds / pyfunc_seconds:.2f} x   (target >= 0.9)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of ADBench <name>.npz files, e.g. ../shared/benchmarks/adbench")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--only", choices=["overhead", "fixed", "scoring"])
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if args.only in (None, "scoring"):
        scoring(args.data.resolve())
    if args.only in (None, "fixed"):
        fixed_cost()
    if args.only in (None, "overhead"):
        overhead(args.data.resolve(), args.trials)


if __name__ == "__main__":
    main()
