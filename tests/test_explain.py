"""SHAP and LIME explanations point at the feature that makes a row anomalous."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import RobustScaler

from pynomaly_core import stages
from pynomaly_core.config import PipelineConfig, load_config
from pynomaly_core.detectors.registry import get
from pynomaly_core.evaluation.explain import ShapExplainer, explain, lime_explain, lime_explanation
from tests.conftest import ROOT, demo_config


@pytest.fixture(scope="module")
def cells():
    frame = pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")
    normal = frame[frame.malignant == 0].drop(columns=["sample_id", "malignant"])
    names = list(normal.columns[:8])
    X = RobustScaler().fit_transform(normal[names])
    odd = X[:3].copy()
    odd[:, names.index("mean_area")] += 12  # three benign cells given an absurd area
    return X, odd, names


@pytest.mark.parametrize("detector, method", [("iforest", "tree"), ("knn", "permutation")])
def test_planted_anomaly_is_explained_by_its_feature(cells, detector, method):
    X, odd, names = cells
    fitted = get(detector).build({}, 0.1, 0).fit(X)
    explanation = explain(fitted, odd, X[:40], names)
    assert explanation.method == method
    assert [explanation.top_features(row, 1)[0][0] for row in range(3)] == ["mean_area"] * 3
    assert next(iter(explanation.global_importance())) == "mean_area"
    assert explanation.values[:, names.index("mean_area")].min() > 0  # pushes the score up


@pytest.mark.parametrize("detector, method", [("iforest", "tree"), ("knn", "permutation")])
def test_an_explainer_set_up_once_gives_each_call_what_a_fresh_one_gives(cells, detector, method):
    X, odd, names = cells
    fitted = get(detector).build({}, 0.1, 0).fit(X)
    explainer = ShapExplainer(fitted, X[:10], names)
    assert explainer.method == method
    for rows in (odd, X[50:53], odd):  # the workbench's pages, one after another
        assert np.array_equal(explainer(rows).values, explain(fitted, rows, X[:10], names).values)


@pytest.mark.parametrize("detector", ["iforest", "knn"])
def test_lime_names_the_planted_feature(cells, detector):
    X, odd, names = cells
    fitted = get(detector).build({}, 0.1, 0).fit(X)
    explanation = lime_explain(fitted, odd, X[:50], names)
    assert explanation.method == "lime"
    assert [explanation.top_features(row, 1)[0][0] for row in range(3)] == ["mean_area"] * 3
    assert explanation.values[:, names.index("mean_area")].min() > 0  # pushes the score up


def test_lime_explains_one_row_of_a_batch_on_demand(cells):
    X, odd, names = cells
    pipeline = make_pipeline(RobustScaler(), get("knn").build({}, 0.1, 0)).fit(pd.DataFrame(X, columns=names))
    batch = pd.DataFrame(np.vstack([X[:60], odd[:1]]), columns=names)  # the odd cell is row 60
    weights = lime_explanation(pipeline, batch, 60)
    assert [feature for feature, _ in weights][0] == "mean_area"
    assert sorted(feature for feature, _ in weights) == sorted(names)
    assert [w for _, w in weights] == sorted((w for _, w in weights), reverse=True)
    # An ordinary cell owes its score to no single feature as much.
    assert max(w for _, w in lime_explanation(pipeline, batch, 0)) < weights[0][1]
    with pytest.raises(IndexError, match="row 61: the frame has 61 rows"):
        lime_explanation(pipeline, batch, 61)
    with pytest.raises(ValueError, match="the frame has 1 row"):
        lime_explanation(pipeline, batch.iloc[:1], 0)


def test_explain_stage_with_lime_logs_its_artifacts_to_mlflow(workdir):
    config = demo_config(detectors=["iforest"], n_trials=2)
    config = config.model_copy(update={"explain": config.explain.model_copy(update={"method": "lime", "top_k": 3, "background": 30})})
    for stage in ("validate", "preprocess", "train"):
        stages.STAGES[stage](config)
    result = stages.explain(config)
    assert result.method == "lime" and len(result.rows) == 3
    assert json.loads(Path(config.paths.explanation).read_text())["method"] == "lime"
    assert any(v > 0 for v in result.global_importance.values())
    run_id = json.loads(Path(config.paths.training).read_text())["run_id"]
    logged = {a.path for a in MlflowClient().list_artifacts(run_id, "explanation")}
    assert logged == {"explanation/explanation.json", "explanation/explanation.png"}
    mlflow.set_tracking_uri(None)


def test_lime_is_refused_for_graph_input():
    config = load_config(ROOT / "configs" / "lesmis.yaml").model_dump()
    config["explain"]["method"] = "lime"
    with pytest.raises(ValidationError, match="explain.method 'lime' is not supported for graph input"):
        PipelineConfig.model_validate(config)
