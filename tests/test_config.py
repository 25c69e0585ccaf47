import os

import pytest

from pynomaly_core.config import ConfigError, load_config
from tests.conftest import ROOT


def test_demo_config_loads_and_is_the_dvc_params_file():
    config = load_config(ROOT / "configs" / "demo.yaml")
    assert config.data.label_column == "malignant"
    assert len(config.data.columns) == 30
    assert (ROOT / "params.yaml").resolve() == (ROOT / "configs" / "demo.yaml").resolve()


def test_unknown_key_is_named(tmp_path):
    text = (ROOT / "configs" / "demo.yaml").read_text().replace("  n_trials: 30", "  n_trails: 30")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"train\.n_trails: Extra inputs are not permitted"):
        load_config(tmp_path / "c.yaml")


def test_wrong_type_is_named(tmp_path):
    text = (ROOT / "configs" / "demo.yaml").read_text().replace("  n_trials: 30", "  n_trials: many")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"train\.n_trials: Input should be a valid integer"):
        load_config(tmp_path / "c.yaml")


def test_label_metric_gate_needs_a_label_column(tmp_path):
    text = (ROOT / "configs" / "demo.yaml").read_text().replace("  label_column: malignant", "  label_column: null")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="registry.gate_metric 'roc_auc' needs data.label_column"):
        load_config(tmp_path / "c.yaml")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("threshold, message", [
    ("{target_fpr: 0}", r"threshold\.target_fpr: Input should be greater than 0"),
    ("{target_fpr: 0.5}", r"threshold\.target_fpr: Input should be less than 0\.5"),
    ("{target_fpr: often}", r"threshold\.target_fpr: Input should be a valid number"),
    ("{target_fpr: 0.05, calibration_share: 1}", r"threshold\.calibration_share: Input should be less than 1"),
    ("{target_fp: 0.05}", r"threshold\.target_fp: Extra inputs are not permitted"),
])
def test_threshold_section_is_validated(tmp_path, threshold, message):
    (tmp_path / "c.yaml").write_text((ROOT / "configs" / "demo.yaml").read_text() + f"\nthreshold: {threshold}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yaml")


def test_threshold_defaults_to_the_contamination_quantile():
    threshold = load_config(ROOT / "configs" / "demo.yaml").threshold
    assert (threshold.target_fpr, threshold.calibration_share) == (None, 0.2)


def test_conformal_threshold_is_refused_for_a_graph(tmp_path):
    (tmp_path / "c.yaml").write_text((ROOT / "configs" / "lesmis.yaml").read_text() + "\nthreshold: {target_fpr: 0.05}\n")
    with pytest.raises(ConfigError, match="threshold.target_fpr is not supported for graph input"):
        load_config(tmp_path / "c.yaml")


def test_flows_read_their_default_config_when_they_run_not_when_imported(tmp_path):
    import inspect
    import subprocess
    import sys

    # Importing the flows (a Prefect worker, the CLI, the tests) must not read configs/demo.yaml.
    code = (
        "import pynomaly_core.config as c\n"
        "def refuse(*a, **k): raise AssertionError('config loaded at import')\n"
        "c.load_config = refuse\n"
        "import flows.training, flows.scoring, flows.monitoring"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr

    from flows.monitoring import monitoring_flow
    from flows.scoring import scoring_flow
    from flows.training import training_flow

    demo = load_config(ROOT / "configs" / "demo.yaml")
    for flow in (training_flow, scoring_flow, monitoring_flow):
        assert inspect.signature(flow.fn).parameters["config"].default is None
        # A deployment's `config` parameter (flows/deploy.py) still arrives as the validated model.
        batch = {} if flow is training_flow else {"batch": "b.csv"}
        assert flow.validate_parameters({**batch, "config": demo.model_dump(mode="json")})["config"] == demo


def test_feedback_labels_need_no_label_column_and_steer_selection(tmp_path):
    text = (ROOT / "configs" / "demo.yaml").read_text().replace("  label_column: malignant", "  label_column: null")
    text = text.replace("  gate_metric: roc_auc", "  gate_metric: selection_score").replace("  use_labels: false", "  use_labels: false\n  labels: feedback")
    (tmp_path / "c.yaml").write_text(text)
    config = load_config(tmp_path / "c.yaml")
    assert config.train.labels == "feedback" and config.train.use_labels
    (tmp_path / "d.yaml").write_text(text.replace("  labels: feedback", "  labels: column").replace("  use_labels: false", "  use_labels: true"))
    with pytest.raises(ConfigError, match="train.use_labels is true but data.label_column is not set"):
        load_config(tmp_path / "d.yaml")


def test_artifact_keys_of_a_table_named_with_underscores_are_valid_for_prefect():
    # `pynomaly init donors_x8.parquet` names the config donors_x8; Prefect refused the flow's summary artifact
    # after every stage had run (keys take lowercase letters, digits and dashes only).
    from prefect.artifacts import MarkdownArtifact

    from flows import artifact_key

    key = artifact_key("Donors_x8.v2", "training-summary")
    assert key == "donors-x8-v2-training-summary"
    assert MarkdownArtifact(key=key, markdown="-").key == key
    with pytest.raises(ValueError, match="Artifact key must only contain"):
        MarkdownArtifact(key="donors_x8-training-summary", markdown="-")
