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
