"""Each deep tabular backend (PyTorch through PyOD's VAE, Keras, JAX) trains inside the `train` stage, is logged as the same pyfunc,
reloads from the MLflow registry and scores as the pickled pipeline did."""

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest

from pynomaly_core import stages
from pynomaly_core.data.preprocessing import features
from tests.conftest import demo_config


@pytest.mark.parametrize("detector", ["vae", "tf_autoencoder", "jax_vae"])
def test_deep_backend_trains_registers_and_reloads(detector, workdir):
    config = demo_config(detectors=[detector], n_trials=1, cv_folds=2)
    config = config.model_copy(update={"registry": config.registry.model_copy(update={"model_name": f"bc-{detector}"})})
    stages.validate(config)
    stages.preprocess(config)
    trained = stages.train(config)
    assert trained.detector == detector and trained.n_failed == 0
    metrics = stages.evaluate(config).metrics
    assert metrics["roc_auc"] > 0.7  # malignant cells rank above benign ones
    registered = stages.register(config)
    requirements = mlflow.pyfunc.get_model_dependencies(registered.model_uri)
    backend = {"vae": "torch==", "tf_autoencoder": "tensorflow==", "jax_vae": "jax=="}[detector]
    assert backend in open(requirements).read()

    test = pd.read_parquet(config.paths.test)
    model = mlflow.pyfunc.load_model(f"models:/{config.registry.model_name}@champion")
    expected = joblib.load(config.paths.model).decision_function(features(test, config.data))
    np.testing.assert_allclose(model.predict(test[list(config.data.columns)])["score"].to_numpy(), expected, atol=1e-6, rtol=0)


def test_cli_lists_every_backend_without_importing_any_framework(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import json, sys; from pynomaly_core.cli import main; main(['detectors', '--json']);"
        "print(json.dumps(sorted(m for m in ('torch', 'tensorflow', 'jax', 'pygod', 'torch_geometric', 'keras') if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    *listing, imported = result.stdout.strip().splitlines()
    assert json.loads(imported) == []
    detectors = {d["name"]: d for d in json.loads("\n".join(listing))}
    assert detectors["dagmm"]["backend"] == "torch" and detectors["dagmm"]["gpu"]
    assert detectors["tf_vae"]["python_dependencies"] == ["tensorflow"] and detectors["jax_vae"]["backend"] == "jax"
    assert detectors["dominant"]["input"] == "graph" and detectors["lstm_forecast"]["input"] == "series"
    assert detectors["featurebagging"]["python_dependencies"] == ["pyod", "combo"]
    assert detectors["iforest"]["default"] and not detectors["autoencoder"]["default"] and not detectors["cola"]["default"]
    assert {n for n, d in detectors.items() if d["default"] and d["input"] == "graph"} == {"dominant", "gcnae", "anomalydae"}
